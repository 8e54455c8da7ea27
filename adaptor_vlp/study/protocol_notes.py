"""What the report says under a task's table about its protocol: what a trivial predictor scores under it, the
faults it keeps or fixes, and their measured size on this study's data.

The trivial scores come from the result files (the classification heads record the majority class's score on
their test split, the segmentation decoders what predicting nothing scores under the published Dice); the
measured sizes from the manifest the protocol wrote (`options.protocol.measured`, `adaptor extract manifest
--protocol`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from adaptor_vlp.cache_schema.layout import dataset_dir
from adaptor_vlp.cache_schema.manifest import ManifestError, read_manifest
from adaptor_vlp.protocols import ProtocolRecord
from adaptor_vlp.study.spec import Metric, TaskSpec

MEASURED_LABELS = {
    "images_in_several_splits": "images in more than one split",
    "images_in_train_and_test": "images in both train and test",
    "patients_in_several_splits": "patients with images in more than one split",
}


def trivial_score_line(metric: Metric, details: Iterable[Mapping[str, object]]) -> str | None:
    """What predicting the majority class (classification) or nothing (segmentation) scores on the test split."""
    details = list(details)
    if metric is Metric.DICE_PUBLISHED:
        shares = {d.get("dice_published_predicting_nothing") for d in details} - {None}
        if shares:
            return (f"- Predicting nothing scores {_span(shares)} under this Dice on this test split (its share of "
                    "images without a finding).")
        return None
    if metric in (Metric.DICE_POSITIVE, Metric.DICE_ALL):
        return "- Predicting nothing scores 0.0 under this Dice."
    if metric is Metric.AUROC:
        return "- A constant score (predicting the majority class for every image) has AUROC 50.0."
    scores = {d.get("majority_class_test_score") for d in details} - {None}
    if scores:
        return f"- Predicting the majority class for every test image scores {_span(scores)} accuracy."
    return None


def protocol_lines(task: TaskSpec, layout: str, cache: Path) -> list[str]:
    """The protocol's faults on this task (kept by published, fixed by corrected) and their measured size."""
    if task.protocol is None:
        return []
    entry = task.protocol_task(layout)
    lines = [f"- Protocol `{task.protocol.name}` ({task.protocol.source}): {task.protocol.title}."]
    if task.seeds != entry.training.seeds:
        lines.append(f"- This study runs seed(s) {list(task.seeds)} of the protocol's {list(entry.training.seeds)} "
                     "(the spec's max_seeds).")
    for key in entry.faults:
        fault = task.protocol.faults[key]
        lines.append(f"- Fault `{key}`: {' '.join(fault.description.split())}")
    measured = _measured(cache, task.dataset)
    if measured:
        sizes = ", ".join(f"{measured[key]} {label}" for key, label in MEASURED_LABELS.items() if key in measured)
        lines.append(f"- Measured on this study's manifest of {measured.get('images', '?')} images "
                     f"(`{dataset_dir(cache, task.dataset)}/manifest.json`): {sizes}.")
    return lines


def _measured(cache: Path, dataset: str) -> Mapping[str, int]:
    try:
        manifest = read_manifest(dataset_dir(cache, dataset))
    except (ManifestError, OSError):
        return {}
    record = ProtocolRecord.from_options(manifest.options, str(dataset_dir(cache, dataset)))
    return record.measured if record else {}


def _span(values: set) -> str:
    low, high = 100 * min(values), 100 * max(values)
    return f"{low:.1f}" if low == high else f"{low:.1f}-{high:.1f}"
