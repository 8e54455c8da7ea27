"""Read the RSNA Pneumonia Detection Challenge (stage 2) into a `Manifest` with a pneumonia label and opacity boxes.

Layout (Kaggle's): `stage_2_train_labels.csv` with columns patientId, x, y, width, height, Target
(one row per box; one row with empty coordinates and Target 0 for an image without opacity) and
the images at `stage_2_train_images/<patientId>.dcm`. RSNA has one image per patient, so the split
is by patient and by image alike: train/validate/test 70/15/15 with a fixed seed, as MGCA splits it.

Each image's DICOM header is read (not its pixels) for its size and view position: the boxes
target records the true image size, so masks decode without opening the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from adaptor_vlp.cache_schema.manifest import Exclusion, Manifest
from adaptor_vlp.cache_schema.targets import Box, encode_boxes_target
from adaptor_vlp.extract.datasets.dicom_header import UnreadableHeader, read_dicom_header
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError, find_file, read_csv_records
from adaptor_vlp.extract.datasets.rows import IMAGE_MISSING, UNREADABLE_HEADER, image_row, require_images
from adaptor_vlp.extract.datasets.splits import held_out, split_groups

DATASET = "rsna"
LABELS_TABLE = "stage_2_train_labels.csv"
IMAGES_FOLDER = "stage_2_train_images"
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
LABEL_NAMES: tuple[str, ...] = ("Pneumonia",)
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
"""Train/validate/test 70/15/15, as MGCA splits it."""


def read_rsna(
    root: Path, val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0
) -> Manifest:
    """One row per labelled image (label-file order): Pneumonia 1.0 when it has boxes, the boxes as its mask.

    Images missing on disk or whose DICOM header cannot be read are left out and listed in `excluded`.
    """
    fractions = held_out(val_fraction, test_fraction)
    hint = f"point --root at the RSNA Pneumonia folder holding {LABELS_TABLE} and {IMAGES_FOLDER}/"
    table = find_file(root, LABELS_TABLE, hint)
    excluded: list[Exclusion] = []
    images = [
        image
        for patient, boxes in _boxes_per_image(table).items()
        if (image := _read_image(root, patient, boxes, excluded)) is not None
    ]
    require_images(len(images), table, excluded)
    splits = split_groups((image.patient for image in images), fractions, seed)
    rows = [
        image_row(image.patient, image.patient, image.patient, splits[image.patient], image.view, image.image_path,
                  {LABEL_NAMES[0]: 1.0 if image.boxes else 0.0}, image.mask)
        for image in images
    ]
    options = {"fractions": fractions.as_dict(), "seed": seed, "split_unit": "patient"}
    return Manifest(DATASET, root, root, tuple(rows), options, label_names=LABEL_NAMES, excluded=tuple(excluded))


@dataclass(frozen=True)
class _Image:
    """A labelled image found on disk: its patient (= image) id, path, view, boxes and their target."""

    patient: str
    image_path: str
    view: str
    boxes: tuple[Box, ...]
    mask: str


def _read_image(root: Path, patient: str, boxes: list[Box], excluded: list[Exclusion]) -> _Image | None:
    """The image with its header read, or None (and the reason recorded) when it cannot be used."""
    image_path = f"{IMAGES_FOLDER}/{patient}.dcm"
    if not (root / image_path).is_file():
        excluded.append(Exclusion(patient, patient, patient, image_path, IMAGE_MISSING))
        return None
    try:
        header = read_dicom_header(root / image_path)
    except UnreadableHeader:
        excluded.append(Exclusion(patient, patient, patient, image_path, UNREADABLE_HEADER))
        return None
    mask = encode_boxes_target(boxes, header.rows, header.columns)
    return _Image(patient, image_path, header.view, tuple(boxes), mask)


def _boxes_per_image(table: Path) -> dict[str, list[Box]]:
    """Each patientId's boxes, in first-appearance order; a Target-0 row contributes none."""
    boxes: dict[str, list[Box]] = {}
    targets: dict[str, str] = {}
    for line_number, record in read_csv_records(table, LABEL_COLUMNS):
        patient, target = record["patientId"], record["Target"]
        if not patient or target not in ("0", "1"):
            raise DownstreamLayoutError(
                f"{table} line {line_number}: patientId {patient!r} with Target {target!r}; expected an id and 0 or 1"
            )
        if targets.setdefault(patient, target) != target:
            raise DownstreamLayoutError(
                f"{table} line {line_number}: patientId {patient} has Target {target} here and "
                f"{targets[patient]} on an earlier line"
            )
        image_boxes = boxes.setdefault(patient, [])
        if target == "1":
            image_boxes.append(_box(record, table, line_number))
    return boxes


def _box(record: dict[str, str], table: Path, line_number: int) -> Box:
    try:
        box = Box(*(float(record[name]) for name in ("x", "y", "width", "height")))
    except ValueError:
        raise DownstreamLayoutError(
            f"{table} line {line_number}: a Target 1 row needs numbers in x, y, width and height, got "
            f"{[record[name] for name in ('x', 'y', 'width', 'height')]}"
        ) from None
    if not (all(math.isfinite(value) for value in (box.x, box.y)) and 0 < box.width < math.inf
            and 0 < box.height < math.inf):
        raise DownstreamLayoutError(f"{table} line {line_number}: box {box} is not a finite box with an area")
    return box
