"""Manifest rows for downstream images, which come without reports, and the reasons shared readers exclude images."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from adaptor_vlp.cache_schema.manifest import Exclusion, ManifestRow, Split
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError
from adaptor_vlp.extract.datasets.mimic_cxr import IMAGE_MISSING

__all__ = ["IMAGE_MISSING", "NO_REPORT", "UNREADABLE_HEADER", "image_row", "require_images"]

NO_REPORT = "no report"
"""The report issue of every downstream row: there is no text to embed, so text extraction masks it."""
UNREADABLE_HEADER = "unreadable DICOM header"


def image_row(
    image_id: str,
    study_id: str,
    subject_id: str,
    split: Split,
    view: str,
    image_path: str,
    labels: Mapping[str, float | None],
    mask: str = "",
) -> ManifestRow:
    """A manifest row for one downstream image (`image_id` is its `dicom_id`), its report marked absent."""
    return ManifestRow(
        dicom_id=image_id,
        study_id=study_id,
        subject_id=subject_id,
        split=split,
        view=view,
        image_path=image_path,
        report_text="",
        report_issue=NO_REPORT,
        labels=labels,
        mask=mask,
    )


def require_images(kept: int, label_file: Path, excluded: Sequence[Exclusion]) -> None:
    """Raise when none of the images a label file lists could be kept: the tree is elsewhere or incomplete."""
    if kept == 0:
        counts = Counter(exclusion.reason for exclusion in excluded)
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items())) or "none listed"
        raise DownstreamLayoutError(
            f"no usable image among those {label_file} lists ({reasons}): check that --root holds the images"
        )
