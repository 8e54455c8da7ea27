"""The Markdown report of a results folder: 1/10/100% side by side like the paper's tables, Adaptor vs backbone.

Every number is shown with its 95% bootstrap interval; a cell that could not be computed says
so, and the notes under each table say why (a fraction skipped, labels left out). The report ends
with where the numbers came from: the stores' backbones and weights, the manifests, and the
Adaptor checkpoint with its SHA-256.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from adaptor_vlp.cache_schema.writes import write_text_atomically
from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval
from adaptor_vlp.evaluate.results import EvaluationTask, FeatureSpace, ResultRecord, StoredResult, read_results

REPORT_FILE = "report.md"

METRIC_TITLES = {
    "macro_auroc": "macro AUROC",
    "accuracy": "accuracy",
    "dice_positive": "Dice, positive images only",
    "dice_all": "Dice, all scorable images",
    "iou_positive": "IoU, positive images only",
    "iou_all": "IoU, all scorable images",
    "empty_gt_false_positive_rate": "false-positive rate on empty masks",
    "dice_published": "Dice as published (empty mask predicted empty scores 1)",
}
SEGMENTATION_METRICS = ("dice_positive", "dice_all", "iou_positive", "iou_all", "empty_gt_false_positive_rate",
                        "dice_published")
TASK_TITLES = {
    EvaluationTask.CLASSIFY: "classification",
    EvaluationTask.ZEROSHOT: "zero-shot classification",
    EvaluationTask.RETRIEVAL: "image-text retrieval",
    EvaluationTask.SEGMENT: "segmentation",
}


def format_interval(interval: ConfidenceInterval | None) -> str:
    """'0.812 [0.790, 0.834]'; 'n/a' when the metric is undefined or missing."""
    if interval is None or math.isnan(interval.point):
        return "n/a"
    if math.isnan(interval.low):
        return f"{interval.point:.3f}"
    return f"{interval.point:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def render_tables(records: Sequence[ResultRecord]) -> str:
    """The Markdown tables (with their notes) of the records, one section per dataset and task."""
    groups: dict[tuple[str, EvaluationTask], list[ResultRecord]] = defaultdict(list)
    for record in records:
        groups[(record.context.dataset, record.task)].append(record)
    renderers = {EvaluationTask.CLASSIFY: _fraction_tables, EvaluationTask.SEGMENT: _fraction_tables,
                 EvaluationTask.ZEROSHOT: _zeroshot_tables, EvaluationTask.RETRIEVAL: _retrieval_tables}
    sections = []
    for (dataset, task), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1].value)):
        split = group[0].split
        sections.append(f"### {dataset}: {TASK_TITLES[task]} ({split} split)\n\n" + renderers[task](group))
    return "\n".join(sections)


def render_report(results: Sequence[StoredResult], plots: Sequence[Path], report_dir: Path) -> str:
    """The whole report: tables, plots (linked relative to `report_dir`) and provenance."""
    records = [stored.record for stored in results]
    parts = ["# Downstream evaluation\n",
             "Intervals are 95% percentile bootstrap intervals over patients of the evaluated split. "
             "Adaptor rows use the trained Adaptor's image output; backbone rows are the baseline on the frozen "
             "backbone's pooled embedding. Data fractions are of the training split; every head is selected on "
             "the whole validation split.\n",
             render_tables(records)]
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![{plot.stem}]({Path(os.path.relpath(plot, report_dir)).as_posix()})"
                                                  for plot in plots) + "\n")
    parts.append("## Provenance\n\n" + _provenance(records))
    return "\n".join(parts)


def write_report(results_dir: Path, plots: Sequence[Path] = ()) -> Path:
    """Writes `RESULTS_DIR/report.md` from every result file under `results_dir`; returns its path."""
    results_dir = Path(results_dir)
    path = results_dir / REPORT_FILE
    write_text_atomically(path, render_report(read_results(results_dir), plots, results_dir))
    return path


def feature_label(record: ResultRecord) -> str:
    """What the head saw: 'dinov2-s + Adaptor', 'dinov2-s (baseline)', or, for segmentation, 'dinov2-s patch tokens'
    or 'dinov2-s patch tokens + Adaptor' ('resnet-ae feature maps ...' for the U-Net)."""
    backbone = record.context.provenance.get("image", {}).get("backbone", "image backbone")
    if record.task is EvaluationTask.SEGMENT:
        inputs = "feature maps" if record.details.get("decoder") == "unet" else "patch tokens"
        adaptor = " + Adaptor" if record.feature_space is FeatureSpace.ADAPTOR else ""
        return f"{backbone} {inputs}{adaptor}"
    return f"{backbone} + Adaptor" if record.feature_space is FeatureSpace.ADAPTOR else f"{backbone} (baseline)"


def _fraction_tables(records: list[ResultRecord]) -> str:
    """Headline metric per (method, features) row and data-fraction column, then per-label or per-metric detail."""
    fractions = sorted({record.data_pct for record in records})
    rows = _rows_by_method(records)
    headlines = list(dict.fromkeys(record.headline for record in records))
    metric_names = SEGMENTATION_METRICS[:2] if records[0].task is EvaluationTask.SEGMENT else headlines
    tables = []
    for metric in metric_names:
        header = ["method", "features"] + [f"{pct:g}%" for pct in fractions]
        cells = [[method, feature] + [_cell(by_fraction.get(pct), metric) for pct in fractions]
                 for (method, feature), by_fraction in rows.items()]
        tables.append(f"{METRIC_TITLES.get(metric, metric)}\n\n" + _table(header, cells))
    tables.append(_detail_table(records, rows, fractions[-1]))
    return "\n".join(table for table in tables if table) + _notes(records)


def _detail_table(records: list[ResultRecord], rows: dict, largest: float) -> str:
    """At the largest fraction: every segmentation metric, or each label's AUROC, per (method, features)."""
    at_largest = {key: by_fraction[largest] for key, by_fraction in rows.items()
                  if largest in by_fraction and not by_fraction[largest].skipped}
    if not at_largest:
        return ""
    if records[0].task is EvaluationTask.SEGMENT:
        header = ["method", "features"] + [METRIC_TITLES[name] for name in SEGMENTATION_METRICS]
        cells = [[method, feature] + [format_interval(record.metrics.get(name)) for name in SEGMENTATION_METRICS]
                 for (method, feature), record in at_largest.items()]
    else:
        labels = list(dict.fromkeys(name for record in at_largest.values() for name in record.metrics
                                    if name.startswith("auroc/")))
        if not labels:
            return ""
        header = ["label"] + [f"{method}, {feature}" for method, feature in at_largest]
        cells = [[name.split("/", 1)[1]] + [format_interval(record.metrics.get(name)) for record in at_largest.values()]
                 for name in labels]
    return f"At {largest:g}% of the training split:\n\n" + _table(header, cells)


def _zeroshot_tables(records: list[ResultRecord]) -> str:
    header = ["class"] + [f"prompts {record.method}, {feature_label(record)}" for record in records]
    names = list(dict.fromkeys(name for record in records for name in record.metrics))
    cells = [[name.split("/", 1)[-1] if "/" in name else METRIC_TITLES.get(name, name)]
             + [format_interval(record.metrics.get(name)) for record in records] for name in names]
    return _table(header, cells) + _notes(records)


def _retrieval_tables(records: list[ResultRecord]) -> str:
    tables = []
    for record in records:
        ks = [name.split("@", 1)[1] for name in record.metrics if name.startswith("mean_recall@")]
        header = ["direction"] + [f"R@{k}" for k in ks]
        cells = [[title] + [format_interval(record.metrics.get(f"{prefix}_recall@{k}")) for k in ks]
                 for prefix, title in (("image_to_text", "image -> text"), ("text_to_image", "text -> image"),
                                       ("mean", "mean of both"))]
        chance = record.details.get("chance", {})
        cells.append(["chance"] + [f"{chance[f'recall@{k}']:.3f}" if f"recall@{k}" in chance else "n/a" for k in ks])
        tables.append(f"{feature_label(record)}, {record.details.get('n_queries', '?')} queries; "
                      f"{record.details.get('protocol', '')}\n\n" + _table(header, cells))
    return "\n".join(tables) + _notes(records)


def _rows_by_method(records: Iterable[ResultRecord]) -> dict[tuple[str, str], dict[float, ResultRecord]]:
    rows: dict[tuple[str, str], dict[float, ResultRecord]] = defaultdict(dict)
    ordered = sorted(records, key=lambda r: (r.method, r.feature_space is not FeatureSpace.ADAPTOR, r.data_pct))
    for record in ordered:
        rows[(record.method, feature_label(record))][record.data_pct] = record
    return dict(rows)


def _cell(record: ResultRecord | None, metric: str) -> str:
    if record is None:
        return ""
    if record.skipped:
        return "skipped"
    return format_interval(record.metrics.get(metric))


def _notes(records: Iterable[ResultRecord]) -> str:
    """Why cells are missing: skipped runs, and labels not trained or without AUROC, grouped by reason."""
    notes: dict[str, list[str]] = defaultdict(list)
    for record in records:
        fraction = "" if record.data_pct is None else f"at {record.data_pct:g}%, "
        if record.skipped:
            notes[f"{fraction}skipped ({record.skipped})"].append(f"{record.method}, {feature_label(record)}")
        for name, reason in record.details.get("labels_not_trained", {}).items():
            notes[f"{fraction}not trained ({reason})"].append(name)
        for name, reason in record.details.get("labels_not_scored", {}).items():
            notes[f"no AUROC ({reason})"].append(name)
    lines = [f"- {note}: {', '.join(dict.fromkeys(names))}" for note, names in notes.items()]
    return ("\nNotes:\n\n" + "\n".join(lines) + "\n") if lines else ""


def _provenance(records: Sequence[ResultRecord]) -> str:
    stores: dict[str, dict] = {}
    adaptors: dict[str, dict] = {}
    for record in records:
        for modality, provenance in record.context.provenance.items():
            key = f"{provenance['dataset']}/{modality}/{provenance['backbone']}"
            stores[key] = provenance
        if record.context.adaptor:
            adaptors[record.context.adaptor["weights_sha256"]] = record.context.adaptor
    cells = [[key, prov["weights_id"], prov["weights_sha256"][:12], prov["manifest_sha256"][:12], prov["code_version"]]
             for key, prov in sorted(stores.items())]
    text = _table(["store", "weights", "weights sha256", "manifest sha256", "code"], cells)
    if adaptors:
        text += "\n" + _table(["Adaptor run", "checkpoint", "weights sha256"],
                              [[ref["run_dir"], ref["checkpoint"], ref["weights_sha256"][:12]]
                               for ref in adaptors.values()])
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
