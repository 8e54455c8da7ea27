"""Downstream metrics with stated definitions: AUROC, accuracy, Dice and IoU (retrieval recall@K: train.retrieval).

Every metric says what it does with the cases that make it undefined, instead of quietly giving
them a score: a class with one label value has no AUROC and leaves the macro average; an image
whose ground truth and prediction are both empty has no Dice and is counted, not rewarded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ClassAuroc:
    """One class's AUROC; `auroc` is NaN and `excluded_reason` says why when it is undefined."""

    name: str
    auroc: float
    n_positive: int
    n_negative: int
    excluded_reason: str | None


@dataclass(frozen=True)
class AurocReport:
    """Per-class AUROC and their unweighted mean over the classes where AUROC is defined."""

    per_class: tuple[ClassAuroc, ...]
    macro: float
    excluded_from_macro: tuple[str, ...]


@dataclass(frozen=True)
class SegmentationReport:
    """Binary segmentation quality; every number's population is defined in `segmentation_report`."""

    dice_all: float
    iou_all: float
    dice_positive: float
    iou_positive: float
    empty_gt_false_positive_rate: float
    n_images: int
    n_positive: int
    n_empty_gt: int
    n_empty_gt_predicted_empty: int


def binary_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative.

    Tied scores count one half (the Mann-Whitney statistic). Returns NaN when the labels hold
    only one value, because no positive-negative pair exists to rank.
    """
    labels = _binary_labels(labels, "labels")
    scores = _finite_scores(scores, labels.shape, "scores")
    n_positive = int(labels.sum())
    n_negative = labels.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    positive_rank_sum = ranks[labels].sum()
    return float((positive_rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def auroc_report(
    labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str] | None = None
) -> AurocReport:
    """Per-class and macro AUROC for (N, C) labels and scores; a 1-D pair is one class.

    Labels are 0/1, or NaN where a sample has no label for that class (it is then left out of
    that class only). A class whose labelled samples are all positive or all negative gets NaN
    with the reason, and the macro average is taken over the remaining classes and names the
    excluded ones; the macro is NaN when no class is left.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim == 1 and scores.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
    if labels.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(
            f"labels {labels.shape} and scores {scores.shape} must be the same (N, C) shape"
        )
    if not (np.isin(labels, (0, 1)) | np.isnan(labels)).all():
        raise ValueError("labels must hold 0, 1, or NaN for unlabelled; map uncertain labels first")
    names = _class_names(class_names, labels.shape[1])
    per_class = tuple(
        _class_auroc(name, labels[:, column], scores[:, column]) for column, name in enumerate(names)
    )
    defined = [entry.auroc for entry in per_class if entry.excluded_reason is None]
    macro = float(np.mean(defined)) if defined else float("nan")
    excluded = tuple(entry.name for entry in per_class if entry.excluded_reason is not None)
    return AurocReport(per_class=per_class, macro=macro, excluded_from_macro=excluded)


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The macro AUROC of `auroc_report` as a bare number, for `bootstrap_ci`."""
    return auroc_report(labels, scores).macro


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of samples whose highest-scoring class is the true class.

    `labels` are class indices (N,), `scores` are (N, C); a tie between classes goes to the
    lowest class index.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"expected labels (N,) and scores (N, C), got {labels.shape} and {scores.shape}")
    if labels.size == 0:
        raise ValueError("accuracy of an empty set is undefined: no samples were given")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), found {labels.min()}..{labels.max()}")
    _finite_scores(scores, scores.shape, "scores")
    return float(np.mean(scores.argmax(axis=1) == labels))


def segmentation_report(predicted: np.ndarray, truth: np.ndarray) -> SegmentationReport:
    """Per-image Dice and IoU of binary masks, averaged over two stated populations.

    Both inputs are (N, H, W) masks of booleans or 0/1 values.
    - `dice_positive`, `iou_positive`: mean over images whose ground truth is non-empty; an
      empty prediction there scores 0.
    - `dice_all`, `iou_all`: mean over every image where the score is defined, that is all
      images except those with empty ground truth AND empty prediction (0/0). A prediction on
      an empty ground truth scores 0; an empty-on-empty image is neither rewarded nor
      penalised, only counted in `n_empty_gt_predicted_empty`. (Scoring it 1, as the published
      code did, lets a model that predicts nothing look good on mostly-empty data.) NaN when
      no image is scorable.
    - `empty_gt_false_positive_rate`: fraction of empty-ground-truth images with a non-empty
      prediction; NaN when no ground truth is empty.
    """
    predicted = _binary_masks(predicted, "predicted")
    truth = _binary_masks(truth, "truth")
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted masks {predicted.shape} and truth {truth.shape} differ in shape")
    flat_predicted = predicted.reshape(len(predicted), -1)
    flat_truth = truth.reshape(len(truth), -1)
    intersection = (flat_predicted & flat_truth).sum(axis=1)
    union = (flat_predicted | flat_truth).sum(axis=1)
    size_sum = flat_predicted.sum(axis=1) + flat_truth.sum(axis=1)
    scorable = union > 0
    dice = np.divide(2 * intersection, size_sum, out=np.full(len(union), np.nan), where=scorable)
    iou = np.divide(intersection, union, out=np.full(len(union), np.nan), where=scorable)
    positive = flat_truth.any(axis=1)
    empty_truth = ~positive
    predicted_any = flat_predicted.any(axis=1)
    return SegmentationReport(
        dice_all=_mean_or_nan(dice[scorable]),
        iou_all=_mean_or_nan(iou[scorable]),
        dice_positive=_mean_or_nan(dice[positive]),
        iou_positive=_mean_or_nan(iou[positive]),
        empty_gt_false_positive_rate=_mean_or_nan(predicted_any[empty_truth]),
        n_images=len(truth),
        n_positive=int(positive.sum()),
        n_empty_gt=int(empty_truth.sum()),
        n_empty_gt_predicted_empty=int((empty_truth & ~predicted_any).sum()),
    )


def _class_auroc(name: str, labels: np.ndarray, scores: np.ndarray) -> ClassAuroc:
    labelled = ~np.isnan(labels)
    labels, scores = labels[labelled], scores[labelled]
    n_positive = int((labels == 1).sum())
    n_negative = int((labels == 0).sum())
    if n_positive == 0 or n_negative == 0:
        present = "positives" if n_positive else "negatives"
        reason = f"only {present} among its {labels.size} labelled samples; AUROC is undefined"
        return ClassAuroc(name, float("nan"), n_positive, n_negative, reason)
    return ClassAuroc(name, binary_auroc(labels, scores), n_positive, n_negative, None)


def _class_names(class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    if class_names is None:
        return [str(column) for column in range(n_classes)]
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names were given for {n_classes} score columns")
    return list(class_names)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def _binary_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1; found {np.unique(labels)[:10]}")
    return labels.astype(bool)


def _binary_masks(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name} masks must be (N, H, W), got shape {masks.shape}")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise ValueError(f"{name} masks must be boolean or 0/1; threshold probabilities first")
    return masks.astype(bool)


def _finite_scores(scores: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != shape:
        raise ValueError(f"{name} have shape {scores.shape}, expected {shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return scores


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")
