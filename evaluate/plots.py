"""Plots a reader would rather look at than read: ROC curves, data-efficiency curves, segmentation overlays and
per-image Dice distributions.

Drawn from result files after every head is trained. matplotlib's pyplot imports PIL, so it is
imported inside `draw_plots` only: importing the evaluate stage, or training a head, pulls in no
image library. Overlays draw the true and predicted masks alone (no radiograph is decoded).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_curve

from adaptor_vlp.cache_schema.writes import write_atomically
from adaptor_vlp.evaluate.report import METRIC_TITLES, feature_label
from adaptor_vlp.evaluate.results import EvaluationTask, ResultRecord, StoredResult

PLOTS_FOLDER = "plots"
MAX_OVERLAYS = 4


def draw_plots(results: Sequence[StoredResult], out_dir: Path) -> list[Path]:
    """Writes PNGs under `out_dir` and returns their paths: a ROC figure per classification or zero-shot
    result at its largest data fraction, a data-efficiency curve per dataset and task with several
    fractions, and mask overlays and the per-image Dice histogram of each segmentation result at its largest
    fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    largest = _largest_fraction_results(results)
    paths = []
    for stored in largest:
        arrays = stored.arrays()
        record = stored.record
        if record.task in (EvaluationTask.CLASSIFY, EvaluationTask.ZEROSHOT) and _is_scored_per_label(arrays):
            paths.append(_roc_figure(pyplot, stored, arrays, out_dir))
        if record.task is EvaluationTask.SEGMENT and "overlay_truth" in arrays and len(arrays["overlay_truth"]):
            paths.append(_overlay_figure(pyplot, stored, arrays, out_dir))
        if record.task is EvaluationTask.SEGMENT and "test_dice" in arrays and arrays["test_positive"].any():
            paths.append(_dice_distribution_figure(pyplot, stored, arrays, out_dir))
    for (dataset, task), group in _fraction_groups(results).items():
        paths.append(_efficiency_figure(pyplot, dataset, task, group, out_dir))
    return paths


def _largest_fraction_results(results: Sequence[StoredResult]) -> list[StoredResult]:
    """Per (dataset, task, method, features), the unskipped result with the largest data fraction."""
    best: dict[tuple, StoredResult] = {}
    for stored in results:
        record = stored.record
        if record.skipped:
            continue
        key = (record.context.dataset, record.task, record.method, record.feature_space, record.seed)
        fraction = -1.0 if record.data_pct is None else record.data_pct
        current = best.get(key)
        if current is None or fraction > (current.record.data_pct or -1.0):
            best[key] = stored
    return list(best.values())


def _fraction_groups(results: Sequence[StoredResult]) -> dict[tuple[str, EvaluationTask], list[StoredResult]]:
    groups: dict[tuple[str, EvaluationTask], list[StoredResult]] = defaultdict(list)
    for stored in results:
        if stored.record.data_pct is not None:
            groups[(stored.record.context.dataset, stored.record.task)].append(stored)
    return {key: group for key, group in groups.items()
            if len({stored.record.data_pct for stored in group}) > 1}


def _is_scored_per_label(arrays: dict[str, np.ndarray]) -> bool:
    """True when the scores are per-label probabilities (multi-label or binary), not a multi-class choice."""
    if "test_scores" not in arrays:
        return False
    return arrays["test_targets"].dtype.kind == "f"


def _roc_figure(pyplot: Any, stored: StoredResult, arrays: dict[str, np.ndarray], out_dir: Path) -> Path:
    record = stored.record
    truth = arrays["test_targets"].reshape(len(arrays["test_targets"]), -1)
    scores = arrays["test_scores"].reshape(len(arrays["test_scores"]), -1)
    figure, axes = pyplot.subplots(figsize=(6, 6))
    for column, name in enumerate(arrays["label_names"]):
        labelled = ~np.isnan(truth[:, column])
        labels = truth[labelled, column]
        if labels.min(initial=1) == labels.max(initial=0):
            continue
        false_positive, true_positive, _ = roc_curve(labels, scores[labelled, column])
        interval = record.metrics.get(f"auroc/{name}") or record.metrics.get("macro_auroc")
        axes.plot(false_positive, true_positive, label=f"{name} ({interval.point:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1),
             title=f"{record.context.dataset}: {_describe(record)}")
    axes.legend(fontsize=7, loc="lower right")
    return _save(pyplot, figure, out_dir / f"{record.context.dataset}-{record.name}-roc.png")


def _efficiency_figure(pyplot: Any, dataset: str, task: EvaluationTask, group: list[StoredResult],
                       out_dir: Path) -> Path:
    lines: dict[str, list] = defaultdict(list)
    for stored in sorted(group, key=lambda s: s.record.data_pct):
        record = stored.record
        interval = record.metrics.get(record.headline)
        if interval is not None and not math.isnan(interval.point):
            lines[f"{record.method}, {feature_label(record)}"].append((record.data_pct, interval))
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for label, points in lines.items():
        fractions = [pct for pct, _ in points]
        values = np.array([interval.point for _, interval in points])
        lows = np.array([interval.low for _, interval in points])
        highs = np.array([interval.high for _, interval in points])
        errors = np.nan_to_num(np.vstack([values - lows, highs - values]))
        axes.errorbar(fractions, values, yerr=errors, marker="o", capsize=3, label=label)
    headline = group[0].record.headline
    axes.set(xscale="log", xlabel="training data (% of the training split)",
             ylabel=METRIC_TITLES.get(headline, headline), title=f"{dataset}: {task.value}, data efficiency")
    axes.legend(fontsize=8)
    return _save(pyplot, figure, out_dir / f"{dataset}-{task.value}-data-efficiency.png")


def _overlay_figure(pyplot: Any, stored: StoredResult, arrays: dict[str, np.ndarray], out_dir: Path) -> Path:
    record = stored.record
    truth, predicted = arrays["overlay_truth"][:MAX_OVERLAYS], arrays["overlay_predicted"][:MAX_OVERLAYS]
    figure, axes = pyplot.subplots(1, len(truth), figsize=(3 * len(truth), 3.4), squeeze=False)
    for panel, (true_mask, predicted_mask, sample_id) in enumerate(zip(truth, predicted, arrays["overlay_ids"])):
        picture = np.zeros((*true_mask.shape, 3))
        picture[..., 0] = predicted_mask
        picture[..., 1] = true_mask
        axes[0, panel].imshow(picture, interpolation="nearest")
        axes[0, panel].set_title(str(sample_id)[:16], fontsize=8)
        axes[0, panel].axis("off")
    figure.suptitle(f"{record.context.dataset}: {_describe(record)}\ngreen truth, red prediction, yellow both",
                    fontsize=9)
    return _save(pyplot, figure, out_dir / f"{record.context.dataset}-{record.name}-overlays.png")


def _dice_distribution_figure(pyplot: Any, stored: StoredResult, arrays: dict[str, np.ndarray], out_dir: Path) -> Path:
    """A histogram of the per-image Dice over test images with a finding, and how the images without one fared:
    the mean hides whether a model segments most images moderately or some well and the rest not at all."""
    record = stored.record
    positive = arrays["test_positive"].astype(bool)
    dice = arrays["test_dice"][positive]
    empty_predicted_empty = int((np.isnan(arrays["test_dice"]) & ~positive).sum())
    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.hist(dice, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    axes.axvline(float(np.mean(dice)), color="black", linestyle="--", linewidth=1, label=f"mean {np.mean(dice):.3f}")
    axes.set(xlabel="Dice per image (images with a finding)", ylabel="images", xlim=(0, 1),
             title=f"{record.context.dataset}: {_describe(record)}")
    axes.legend(fontsize=8, title=f"{positive.sum()} with a finding; {empty_predicted_empty} of "
                                  f"{(~positive).sum()} without one predicted empty", title_fontsize=7)
    return _save(pyplot, figure, out_dir / f"{record.context.dataset}-{record.name}-dice-per-image.png")


def _describe(record: ResultRecord) -> str:
    fraction = "" if record.data_pct is None else f", {record.data_pct:g}% of train"
    return f"{record.task.value} {record.method}, {feature_label(record)}{fraction}"


def _save(pyplot: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    try:
        write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    finally:
        pyplot.close(figure)
    return path
