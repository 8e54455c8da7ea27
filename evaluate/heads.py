"""Classification heads on frozen features: a logistic-regression probe and the paper's MLP head.

Both are fitted through `fit_head` and answer `predict_scores`, so a downstream run swaps one
for the other with a single option. Scores are probabilities: (N, C) per label for multi-label
tasks, (N, C) summing to one for multi-class tasks, and (N,) for the positive class of binary
tasks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from adaptor_vlp.evaluate.early_stopping import (
    TrainingOutcome,
    TrainingSettings,
    predict_in_batches,
    seeded_torch,
    train_with_early_stopping,
)
from adaptor_vlp.evaluate.metrics import accuracy, macro_auroc

C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


class LabelStructure(Enum):
    """The label structure: independent 0/1 labels, one class of several, or one 0/1 label."""

    MULTILABEL = "multilabel"
    MULTICLASS = "multiclass"
    BINARY = "binary"


class HeadKind(Enum):
    """Which head is trained on the frozen features."""

    LINEAR = "linear"
    MLP = "mlp"


@dataclass(frozen=True)
class MlpSettings:
    """The MLP head's width, dropout, and optimiser and early-stopping settings."""

    hidden: int = 512
    dropout: float = 0.2
    training: TrainingSettings = field(default_factory=TrainingSettings)


class FittedHead(ABC):
    """A trained head: its task, its validation loss, and probability scores for new features."""

    task: LabelStructure
    n_features: int
    val_loss: float

    @abstractmethod
    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        """Probability scores for (N, D) features; see the module docstring for their shape."""


@dataclass(frozen=True)
class LinearProbe(FittedHead):
    """Logistic regression on standardised features, one model per label for multi-label tasks.

    `chosen_c` holds each model's inverse regularisation strength, picked from `c_grid` by the
    lowest validation log-loss (defined even when a validation label has a single value, unlike
    AUROC); `val_loss` is the chosen models' mean validation log-loss.
    """

    task: LabelStructure
    n_features: int
    n_outputs: int
    c_grid: tuple[float, ...]
    chosen_c: tuple[float, ...]
    val_loss: float
    scaler: StandardScaler
    models: tuple[LogisticRegression, ...]

    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        scaled = self.scaler.transform(_checked_features(features, "features", self.n_features))
        if self.task is LabelStructure.MULTICLASS:
            return _full_class_probabilities(self.models[0], scaled, self.n_outputs)
        positive = np.stack([model.predict_proba(scaled)[:, 1] for model in self.models], axis=1)
        return positive[:, 0] if self.task is LabelStructure.BINARY else positive


@dataclass(frozen=True)
class MlpHead(FittedHead):
    """The paper's head: Dropout, Linear(D, 512, no bias), BatchNorm, ReLU, Dropout, Linear.

    Trained with AdamW on binary cross-entropy (multi-label, binary) or cross-entropy
    (multi-class); `training` says which epoch's weights were kept by validation loss.
    """

    task: LabelStructure
    n_features: int
    module: nn.Sequential
    training: TrainingOutcome
    batch_size: int
    settings: MlpSettings = field(default_factory=MlpSettings)
    """The width, dropout and training settings it was trained with."""

    @property
    def val_loss(self) -> float:
        return self.training.best_val_loss

    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(_checked_features(features, "features", self.n_features))
        logits = predict_in_batches(self.module, inputs, self.batch_size)
        if self.task is LabelStructure.MULTICLASS:
            return torch.softmax(logits, dim=1).numpy()
        probabilities = torch.sigmoid(logits).numpy()
        return probabilities[:, 0] if self.task is LabelStructure.BINARY else probabilities


def fit_head(
    kind: LabelStructure,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    head: HeadKind = HeadKind.LINEAR,
    seed: int = 0,
    n_classes: int | None = None,
    c_grid: Sequence[float] = C_GRID,
    mlp: MlpSettings = MlpSettings(),
) -> FittedHead:
    """Trains a head on (N, D) features and validates it on the validation split.

    Labels: multi-label (N, C) of 0/1; binary (N,) of 0/1; multi-class (N,) class indices, with
    `n_classes` defaulting to one more than the largest index seen. Every training label must
    take both values (multi-class: at least two classes), since a head cannot learn a label
    it never sees vary. The linear probe picks C from `c_grid` on the validation split and is
    deterministic (its L-BFGS solver draws nothing random); the MLP stops early on validation
    loss and is repeatable on CPU for a given `seed`.
    """
    train_x = _checked_features(train_x, "train_x")
    val_x = _checked_features(val_x, "val_x", train_x.shape[1])
    train_y = _checked_labels(kind, train_y, len(train_x), "train")
    val_y = _checked_labels(kind, val_y, len(val_x), "val")
    if kind is LabelStructure.MULTICLASS:
        n_classes = _class_count(n_classes, train_y, val_y)
    if head is HeadKind.LINEAR:
        return _fit_linear_probe(kind, train_x, train_y, val_x, val_y, n_classes, tuple(c_grid))
    return _fit_mlp(kind, train_x, train_y, val_x, val_y, n_classes, mlp, seed)


def _fit_linear_probe(
    kind: LabelStructure,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int | None,
    c_grid: tuple[float, ...],
) -> LinearProbe:
    if not c_grid or min(c_grid) <= 0:
        raise ValueError(f"c_grid must hold positive values, got {c_grid}")
    scaler = StandardScaler().fit(train_x)
    train_scaled, val_scaled = scaler.transform(train_x), scaler.transform(val_x)
    if kind is LabelStructure.MULTICLASS:
        columns = [(train_y, val_y)]
    else:
        train_columns = train_y.reshape(len(train_y), -1)
        val_columns = val_y.reshape(len(val_y), -1)
        columns = list(zip(train_columns.T, val_columns.T))
    class_count = n_classes if kind is LabelStructure.MULTICLASS else 2
    fits = [
        _best_logistic_regression(train_scaled, train_column, val_scaled, val_column, class_count, c_grid)
        for train_column, val_column in columns
    ]
    return LinearProbe(
        task=kind,
        n_features=train_x.shape[1],
        n_outputs=class_count if kind is LabelStructure.MULTICLASS else len(fits),
        c_grid=c_grid,
        chosen_c=tuple(c for _, c, _ in fits),
        val_loss=float(np.mean([loss for _, _, loss in fits])),
        scaler=scaler,
        models=tuple(model for model, _, _ in fits),
    )


def _best_logistic_regression(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    c_grid: tuple[float, ...],
) -> tuple[LogisticRegression, float, float]:
    """The model, C and validation log-loss of the grid's C with the lowest validation log-loss."""
    best: tuple[LogisticRegression, float, float] | None = None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        probabilities = _full_class_probabilities(model, val_x, n_classes)
        loss = _log_loss(val_y, probabilities)
        if best is None or loss < best[2]:
            best = (model, c, loss)
    return best


def _log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class, clipped so a zero costs log(1e15)."""
    true_class = probabilities[np.arange(len(labels)), labels.astype(int)]
    return float(-np.mean(np.log(np.clip(true_class, 1e-15, 1.0))))


def _full_class_probabilities(model: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities, zero for classes the model never saw in training."""
    probabilities = np.zeros((len(x), n_classes))
    probabilities[:, model.classes_.astype(int)] = model.predict_proba(x)
    return probabilities


def _fit_mlp(
    kind: LabelStructure,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int | None,
    settings: MlpSettings,
    seed: int,
) -> MlpHead:
    n_outputs = n_classes if kind is LabelStructure.MULTICLASS else train_y.reshape(len(train_y), -1).shape[1]
    loss_fn = nn.CrossEntropyLoss() if kind is LabelStructure.MULTICLASS else nn.BCEWithLogitsLoss()
    with seeded_torch(seed):
        module = nn.Sequential(
            nn.Dropout(settings.dropout),
            nn.Linear(train_x.shape[1], settings.hidden, bias=False),
            nn.BatchNorm1d(settings.hidden),
            nn.ReLU(),
            nn.Dropout(settings.dropout),
            nn.Linear(settings.hidden, n_outputs),
        )
        outcome = train_with_early_stopping(
            module,
            loss_fn,
            train=(torch.from_numpy(train_x), _target_tensor(kind, train_y)),
            val=(torch.from_numpy(val_x), _target_tensor(kind, val_y)),
            settings=settings.training,
            seed=seed,
            val_metric=partial(_validation_metric, kind),
        )
    return MlpHead(
        task=kind,
        n_features=train_x.shape[1],
        module=module,
        training=outcome,
        batch_size=settings.training.batch_size,
        settings=settings,
    )


def _validation_metric(kind: LabelStructure, logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The published finetuner's validation metric: accuracy (multi-class), else AUROC (macro over labels).

    A validation split whose labels take one value has no AUROC; it scores 0.5, as chance.
    """
    if kind is LabelStructure.MULTICLASS:
        return accuracy(targets.numpy(), torch.softmax(logits, dim=1).numpy())
    truth = targets.numpy().reshape(len(targets), -1)
    scores = torch.sigmoid(logits).numpy().reshape(len(logits), -1)
    value = macro_auroc(truth, scores)
    return value if np.isfinite(value) else 0.5


def _target_tensor(kind: LabelStructure, labels: np.ndarray) -> torch.Tensor:
    if kind is LabelStructure.MULTICLASS:
        return torch.from_numpy(labels.astype(np.int64))
    targets = torch.from_numpy(labels.astype(np.float32))
    return targets[:, None] if kind is LabelStructure.BINARY else targets


def _checked_features(features: np.ndarray, name: str, n_features: int | None = None) -> np.ndarray:
    """The features as a float32 (N, D) array, after checking their shape and values."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {features.shape}")
    if n_features is not None and features.shape[1] != n_features:
        raise ValueError(f"{name} have {features.shape[1]} features, the head expects {n_features}")
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return features


def _checked_labels(kind: LabelStructure, labels: np.ndarray, n_rows: int, split: str) -> np.ndarray:
    labels = np.asarray(labels)
    expected_ndim = 2 if kind is LabelStructure.MULTILABEL else 1
    if labels.ndim != expected_ndim or len(labels) != n_rows:
        shape = "(N, C)" if expected_ndim == 2 else "(N,)"
        raise ValueError(
            f"{split} labels for a {kind.value} task must be {shape} with N={n_rows}, got {labels.shape}"
        )
    if kind is LabelStructure.MULTICLASS:
        if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
            raise ValueError(f"{split} multiclass labels must be non-negative integer class indices")
        if split == "train" and np.unique(labels).size < 2:
            raise ValueError("train labels hold a single class; a classifier needs at least two")
        return labels
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"{split} {kind.value} labels must be 0 or 1; map uncertain or missing labels first"
        )
    if split == "train":
        _require_both_values(labels.reshape(n_rows, -1))
    return labels


def _require_both_values(labels: np.ndarray) -> None:
    constant = [column for column in range(labels.shape[1]) if np.unique(labels[:, column]).size < 2]
    if constant:
        raise ValueError(
            f"train label column(s) {constant} take a single value; a head cannot learn them. "
            "Drop those classes or train on a larger fraction of the training split."
        )


def _class_count(n_classes: int | None, train_y: np.ndarray, val_y: np.ndarray) -> int:
    seen = int(max(train_y.max(), val_y.max(initial=0))) + 1
    if n_classes is None:
        return seen
    if n_classes < seen:
        raise ValueError(f"n_classes={n_classes} but labels reach class index {seen - 1}")
    return n_classes
