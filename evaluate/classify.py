"""Classification on frozen features at 1, 10 and 100% of the training split: the Adaptor against its backbone.

For each data fraction one seeded subset of the training split is drawn (a smaller fraction's
subset lies inside a larger one's) and shared by every feature space, so the Adaptor and the
baseline see the same images. A head is fitted on the subset, selected on the whole validation
split, and scored on the test split with 95% bootstrap intervals that resample patients.

Labels: "not mentioned" reads as negative. An uncertain (-1) label is read by the stated policy
for training and validation, and is left unscored on the test split (NaN), since its truth is
unknown. A label that takes one value in a small subset cannot be learnt; it is left out of that
fraction and the result says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import numpy as np

from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval, bootstrap_ci
from adaptor_vlp.evaluate.features import DatasetRows
from adaptor_vlp.evaluate.heads import (
    FittedHead,
    HeadKind,
    LabelStructure,
    LinearProbe,
    MlpHead,
    MlpSettings,
    fit_head,
)
from adaptor_vlp.evaluate.metrics import accuracy, auroc_report, macro_auroc
from adaptor_vlp.evaluate.protocol_heads import (
    check_manifest_protocol,
    protocol_head_kind,
    protocol_mlp_settings,
    protocol_subset,
)
from adaptor_vlp.evaluate.results import EvaluatedRun, EvaluationTask, FeatureSpace, ResultRecord, RunContext
from adaptor_vlp.protocols import TaskProtocol

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validate"
TEST_SPLIT = "test"


class ClassificationError(ValueError):
    """The dataset cannot be classified as asked: unknown labels, labels that do not fit the task, an empty split."""


class UncertainPolicy(str, Enum):
    """How an uncertain (-1) label is read for training and validation: negative (U-zeros) or positive (U-ones)."""

    ZEROS = "zeros"
    ONES = "ones"


@dataclass(frozen=True)
class ClassificationTargets:
    """The labels of one task, per row of a `DatasetRows`.

    `fit` is what heads train and validate on: (N, C) 0/1 for multi-label, (N,) 0/1 for binary,
    (N,) class indices for multi-class. `scored` is what the test split is scored against: the
    same, except that uncertain labels are NaN (left out of that class's AUROC).
    """

    task: LabelStructure
    names: tuple[str, ...]
    fit: np.ndarray
    scored: np.ndarray
    uncertain: UncertainPolicy


@dataclass(frozen=True)
class ClassifySettings:
    """The head, the training fractions (percent), one seed for subsets, heads and bootstrap, and resamples.

    With `protocol` (a protocol file's task), the protocol decides the head, its training recipe and the
    training subsets (`evaluate.protocol_heads`), and `head` is ignored.
    """

    head: HeadKind = HeadKind.LINEAR
    fractions: tuple[float, ...] = (1.0, 10.0, 100.0)
    seed: int = 0
    n_resamples: int = 1000
    protocol: TaskProtocol | None = None

    @property
    def head_kind(self) -> HeadKind:
        return protocol_head_kind(self.protocol) if self.protocol else self.head


def classification_targets(
    rows: DatasetRows,
    task: LabelStructure | None = None,
    labels: Sequence[str] | None = None,
    uncertain: UncertainPolicy = UncertainPolicy.ZEROS,
) -> ClassificationTargets:
    """The task's targets from the manifest labels; `labels` picks label names (default: all of them).

    `task` defaults to binary for one label and multi-label otherwise. Multi-class needs every
    row to have exactly one positive label among `labels` and no uncertain one.
    """
    names = tuple(labels) if labels else rows.label_names
    unknown = [name for name in names if name not in rows.label_names]
    if unknown:
        raise ClassificationError(f"unknown label(s) {unknown}; the {rows.manifest.dataset} manifest has "
                                  f"{list(rows.label_names)}")
    if not names:
        raise ClassificationError(f"the {rows.manifest.dataset} manifest has no label columns to classify")
    raw = rows.labels[:, [rows.label_names.index(name) for name in names]]
    task = task or (LabelStructure.BINARY if len(names) == 1 else LabelStructure.MULTILABEL)
    if task is LabelStructure.MULTICLASS:
        classes = _single_positive_class(raw, rows.ids, names)
        return ClassificationTargets(task, names, classes, classes, uncertain)
    if task is LabelStructure.BINARY and len(names) != 1:
        raise ClassificationError(f"a binary task takes one label, got {len(names)}: {list(names)}; "
                                  "pick one with --labels or use --task multilabel")
    mentioned = np.nan_to_num(raw, nan=0.0)
    fit = np.where(mentioned == -1, 1.0 if uncertain is UncertainPolicy.ONES else 0.0, mentioned)
    scored = np.where(mentioned == -1, np.nan, mentioned)
    if task is LabelStructure.BINARY:
        fit, scored = fit[:, 0], scored[:, 0]
    return ClassificationTargets(task, names, fit.astype(np.int64), scored, uncertain)


def run_classification(
    rows: DatasetRows,
    targets: ClassificationTargets,
    features: Mapping[FeatureSpace, np.ndarray],
    contexts: Mapping[FeatureSpace, RunContext],
    settings: ClassifySettings,
) -> list[EvaluatedRun]:
    """Fits and scores one head per (fraction, feature space).

    `features[space]` is (N, D) with one row per row of `rows`; `contexts[space]` is what its results record.
    """
    train, val, test = (rows.positions(split) for split in (TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT))
    for split, positions in ((TRAIN_SPLIT, train), (VALIDATION_SPLIT, val), (TEST_SPLIT, test)):
        if len(positions) == 0:
            raise ClassificationError(f"the {rows.manifest.dataset} store {rows.store.path} has no valid "
                                      f"'{split}' rows; classification needs train, validate and test rows")
    record = check_manifest_protocol(rows, settings.protocol) if settings.protocol else None
    runs = []
    for pct in settings.fractions:
        if settings.protocol:
            chosen, subset = protocol_subset(rows, train, pct, settings.protocol, record, settings.seed)
        else:
            chosen, subset = rows.training_subset(train, pct, settings.seed)
        columns, left_out, skipped = _learnable_columns(targets, chosen)
        for space, space_features in features.items():
            record_fields = dict(task=EvaluationTask.CLASSIFY, context=contexts[space], feature_space=space,
                                 method=settings.head_kind.value, split=TEST_SPLIT, data_pct=pct,
                                 subset=subset.to_json(), seed=settings.seed, headline=_headline(targets.task))
            details = {"task": targets.task.value, "uncertain_policy": targets.uncertain.value,
                       "labels": list(targets.names), "labels_not_trained": left_out,
                       "n_train": len(chosen), "n_validate": len(val), "n_test": len(test),
                       "rows_dropped": dict(rows.dropped), **_protocol_details(settings.protocol)}
            arrays = {"subset_ids": rows.ids[chosen]}
            if skipped:
                record = ResultRecord(**record_fields, metrics={}, details=details, skipped=skipped)
            else:
                metrics, scored_details, test_arrays = _fit_and_score(space_features, targets, columns, chosen, val,
                                                                      test, rows, settings, pct)
                record = ResultRecord(**record_fields, metrics=metrics, details={**details, **scored_details})
                arrays.update(test_arrays)
            runs.append(EvaluatedRun(record, arrays))
    return runs


def metrics_with_intervals(task: LabelStructure, truth: np.ndarray, scores: np.ndarray, names: Sequence[str],
                           groups: np.ndarray, n_resamples: int,
                           seed: int) -> tuple[dict[str, ConfidenceInterval], dict[str, str]]:
    """Test-split metrics with 95% bootstrap intervals resampling `groups` (patients), and the labels
    whose AUROC is undefined, with why.

    Multi-class: accuracy of (N,) class indices against (N, C) scores. Otherwise macro AUROC and,
    for several labels, each label's AUROC, of (N, C) or (N,) targets (NaN: unscored) and scores.
    """
    def interval(metric, *arrays: np.ndarray) -> ConfidenceInterval:
        return bootstrap_ci(metric, *arrays, n_resamples=n_resamples, seed=seed, groups=groups)

    if task is LabelStructure.MULTICLASS:
        return {"accuracy": interval(accuracy, truth, scores)}, {}
    truth = truth.reshape(len(truth), -1)
    scores = scores.reshape(len(scores), -1)
    report = auroc_report(truth, scores, names)
    metrics = {"macro_auroc": interval(macro_auroc, truth, scores)}
    if len(names) > 1:
        for column, name in enumerate(names):
            metrics[f"auroc/{name}"] = interval(macro_auroc, truth[:, [column]], scores[:, [column]])
    not_scored = {entry.name: entry.excluded_reason for entry in report.per_class if entry.excluded_reason}
    return metrics, not_scored


def _fit_and_score(features: np.ndarray, targets: ClassificationTargets, columns: list[int], chosen: np.ndarray,
                   val: np.ndarray, test: np.ndarray, rows: DatasetRows, settings: ClassifySettings, pct: float
                   ) -> tuple[dict[str, ConfidenceInterval], dict[str, object], dict[str, np.ndarray]]:
    """Fits a head on the subset's learnable labels and scores the test split: metrics, details, arrays to keep."""
    mlp = (protocol_mlp_settings(settings.protocol, len(chosen), pct)
           if settings.protocol and settings.head_kind is HeadKind.MLP else MlpSettings())
    head = fit_head(targets.task, *_task_data(features, targets, chosen, columns),
                    *_task_data(features, targets, val, columns), head=settings.head_kind, seed=settings.seed,
                    n_classes=len(targets.names) if targets.task is LabelStructure.MULTICLASS else None, mlp=mlp)
    scores = head.predict_scores(features[test])
    truth = _scored(targets, test, columns)
    names = [targets.names[column] for column in columns]
    metrics, not_scored = metrics_with_intervals(targets.task, truth, scores, names, rows.subjects[test],
                                                 settings.n_resamples, settings.seed)
    arrays = {"test_ids": rows.ids[test], "test_targets": truth, "test_scores": scores, "label_names": np.array(names)}
    details = {"head": _head_details(head), "labels_not_scored": not_scored,
               "majority_class_test_score": _majority_class_score(targets.task, truth)}
    return metrics, details, arrays


def _majority_class_score(task: LabelStructure, truth: np.ndarray) -> float:
    """What predicting the majority class for every test row scores: its share (multi-class accuracy), else the
    AUROC of a constant score, 0.5."""
    if task is LabelStructure.MULTICLASS:
        return float(np.bincount(truth.astype(np.int64)).max() / len(truth))
    return 0.5


def _protocol_details(task: TaskProtocol | None) -> dict[str, object]:
    """What a result records of the protocol task that made it (nothing without one)."""
    if task is None:
        return {}
    recipe = task.training
    return {"protocol": {"task": task.name, "split_rule": task.split.rule.value, "subset_rule": task.subset.rule.value,
                         "learning_rate": recipe.learning_rate, "weight_decay": recipe.weight_decay,
                         "batch_size": recipe.batch_size, "devices": recipe.devices, "epochs": recipe.epochs,
                         "schedule": recipe.schedule.value, "patience": recipe.patience,
                         "selection": recipe.selection.value}}


def _single_positive_class(raw: np.ndarray, ids: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    positives = (raw == 1).sum(axis=1)
    broken = (positives != 1) | (raw == -1).any(axis=1)
    if broken.any():
        first = int(np.argmax(broken))
        raise ClassificationError(f"a multi-class task needs exactly one positive label per row among {list(names)}; "
                                  f"{int(broken.sum())} rows do not, e.g. {ids[first]} with {raw[first].tolist()}")
    return np.argmax(raw == 1, axis=1).astype(np.int64)


def _learnable_columns(targets: ClassificationTargets,
                       chosen: np.ndarray) -> tuple[list[int], dict[str, str], str | None]:
    """Label columns a head can learn from the subset, those it cannot and why, and why nothing can be fitted."""
    fit = targets.fit[chosen]
    if len(chosen) < 2:
        return [], {}, f"the subset holds {len(chosen)} training row; a head needs at least 2"
    if targets.task is LabelStructure.MULTICLASS:
        seen = np.unique(fit)
        if len(seen) < 2:
            return [], {}, f"every row of the subset is class {targets.names[int(seen[0])]!r}; a head needs two classes"
        return list(range(len(targets.names))), {}, None
    fit = fit.reshape(len(chosen), -1)
    columns, left_out = [], {}
    for column, name in enumerate(targets.names):
        values = np.unique(fit[:, column])
        if len(values) < 2:
            left_out[name] = f"all {len(chosen)} training rows are {'positive' if values[0] else 'negative'}"
        else:
            columns.append(column)
    skipped = None if columns else "every label takes a single value in the subset"
    return columns, left_out, skipped


def _task_data(features: np.ndarray, targets: ClassificationTargets, positions: np.ndarray,
               columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    labels = targets.fit[positions]
    if targets.task is LabelStructure.MULTILABEL:
        labels = labels[:, columns]
    return features[positions], labels


def _scored(targets: ClassificationTargets, positions: np.ndarray, columns: list[int]) -> np.ndarray:
    truth = targets.scored[positions]
    return truth[:, columns] if targets.task is LabelStructure.MULTILABEL else truth


def _headline(task: LabelStructure) -> str:
    return "accuracy" if task is LabelStructure.MULTICLASS else "macro_auroc"


def _head_details(head: FittedHead) -> dict[str, object]:
    if isinstance(head, MlpHead):
        training = head.settings.training
        return {"kind": HeadKind.MLP.value, "best_epoch": head.training.best_epoch,
                "epochs_run": head.training.epochs_run, "val_loss": head.val_loss,
                "best_val_metric": head.training.best_val_metric,
                "recipe": {"hidden": head.settings.hidden, "dropout": head.settings.dropout,
                           "learning_rate": training.learning_rate, "weight_decay": training.weight_decay,
                           "step_batch": training.batch_size, "max_epochs": training.max_epochs,
                           "patience": training.patience, "schedule_t0": training.schedule_t0,
                           "eta_min": training.eta_min, "validate_every": training.validate_every,
                           "min_delta": training.min_delta, "select_on_metric": training.select_on_metric}}
    if isinstance(head, LinearProbe):
        return {"kind": HeadKind.LINEAR.value, "chosen_c": list(head.chosen_c), "val_loss": head.val_loss}
    raise TypeError(f"no details known for a {type(head).__name__}")
