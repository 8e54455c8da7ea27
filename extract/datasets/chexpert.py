"""Read CheXpert (`CheXpert-v1.0/` or `CheXpert-v1.0-small/`) into a `Manifest` of its 14 labels.

Layout: the dataset folder holds `train.csv`, `valid.csv`, `train/` and `valid/`; images lie at
`train/patient00001/study1/view1_frontal.jpg`. The tables' `Path` column is relative to the folder
above the dataset folder (`CheXpert-v1.0-small/train/...`); its first component is dropped, so a
renamed dataset folder still reads.

Splits, as GLoRIA, MGCA and the Adaptor paper's downstream code use them: the official
`valid.csv` (radiologist labels) is the test split, and a validation split is carved out of
`train.csv`, here by patient with a fixed seed (those works draw 5,000 images at random instead,
which lets a patient's images straddle train and validation).

Labels: CheXpert's labeler writes 1.0, 0.0, -1.0 (uncertain) or nothing (not mentioned). The
uncertain and blank policies below decide what the manifest records; None (an empty cell) means
"not scored" to the evaluate stage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Mapping

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Exclusion, Manifest, ManifestRow, Split, parse_label
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError, find_file, read_csv_records
from adaptor_vlp.extract.datasets.rows import IMAGE_MISSING, image_row, require_images
from adaptor_vlp.extract.datasets.splits import held_out, split_groups

DATASET = "chexpert"
TRAIN_TABLE = "train.csv"
VALID_TABLE = "valid.csv"
PATH_COLUMN = "Path"
FRONTAL_COLUMN = "Frontal/Lateral"
VIEW_COLUMN = "AP/PA"
IMAGE_FOLDERS = ("train", "valid")

COMPETITION_TASKS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five labels of the CheXpert competition, which the published downstream results report."""
COMPETITION_UNCERTAIN: Mapping[str, float] = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 0.0,
    "Consolidation": 0.0,
    "Edema": 1.0,
    "Pleural Effusion": 1.0,
}
"""Uncertain -> this value per competition task: GLoRIA's and MGCA's mapping after the CheXpert paper's
findings (U-Ones helped Atelectasis and Edema)."""

DEFAULT_VAL_FRACTION = 0.025
"""Share of training patients held out for validation: about the 5,000 images GLoRIA and MGCA hold out."""
LATERAL_IMAGE = "lateral image (frontal only)"


class ChexpertUncertainPolicy(str, Enum):
    """What an uncertain (-1.0) label of CheXpert's tables becomes in the manifest the reader writes.

    Not `evaluate.classify.UncertainPolicy`: that one reads the -1.0 labels a manifest still holds
    (MIMIC-CXR's) when heads are fitted; this one decides, when CheXpert is read, what the manifest
    records (including CheXpert's own competition mapping), and leaves no -1.0 behind.
    """

    COMPETITION = "competition"
    """The five competition tasks as `COMPETITION_UNCERTAIN` says; the other nine labels are not scored (None)."""
    ONES = "ones"
    """U-Ones: uncertain counts as positive."""
    ZEROS = "zeros"
    """U-Zeros: uncertain counts as negative."""
    IGNORE = "ignore"
    """U-Ignore: uncertain is not scored (None)."""


class BlankPolicy(str, Enum):
    """What a label the report does not mention (an empty cell) becomes in the manifest."""

    NEGATIVE = "negative"
    """Not mentioned counts as negative (0.0), as GLoRIA and MGCA read the tables."""
    IGNORE = "ignore"
    """Not mentioned is not scored (None)."""


DEFAULT_UNCERTAIN = ChexpertUncertainPolicy.COMPETITION
DEFAULT_BLANK = BlankPolicy.NEGATIVE


@dataclass(frozen=True)
class _Image:
    """One kept table row: where its image lies, its ids, view and raw labels."""

    image_path: str
    patient: str
    study: str
    image_id: str
    view: str
    labels: Mapping[str, float | None]


def read_chexpert(
    root: Path,
    uncertain: ChexpertUncertainPolicy = DEFAULT_UNCERTAIN,
    blank: BlankPolicy = DEFAULT_BLANK,
    frontal_only: bool = True,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
) -> Manifest:
    """One row per kept image of `train.csv` (train or validate split) then `valid.csv` (test split).

    Lateral images (when `frontal_only`) and images missing on disk are left out and counted by
    reason (listed in `excluded`). Labels follow the `uncertain` and `blank` policies; the validation patients are drawn
    from the training patients by `seed`.
    """
    fractions = held_out(val_fraction)
    hint = "point --root at the CheXpert-v1.0 or CheXpert-v1.0-small folder holding train.csv and valid.csv"
    train_table, valid_table = find_file(root, TRAIN_TABLE, hint), find_file(root, VALID_TABLE, hint)
    excluded: list[Exclusion] = []
    train_images = list(_kept_images(root, train_table, frontal_only, excluded))
    require_images(len(train_images), train_table, excluded)
    test_images = list(_kept_images(root, valid_table, frontal_only, excluded))
    train_splits = split_groups((image.patient for image in train_images), fractions, seed)
    rows = [_row(image, train_splits[image.patient], uncertain, blank) for image in train_images]
    rows += [_row(image, Split.TEST, uncertain, blank) for image in test_images]
    options = {
        "uncertain": uncertain.value,
        "blank": blank.value,
        "frontal_only": frontal_only,
        "val_fraction": val_fraction,
        "seed": seed,
        "split_unit": "patient",
        "test_split": VALID_TABLE,
    }
    return Manifest(DATASET, root, root, tuple(rows), options, excluded=tuple(excluded))


def policy_label(
    value: float | None, name: str, uncertain: ChexpertUncertainPolicy, blank: BlankPolicy
) -> float | None:
    """A table label after the policies: 1.0, 0.0, or None for "not scored"."""
    if value is None:
        return 0.0 if blank is BlankPolicy.NEGATIVE else None
    if value != -1.0:
        return value
    if uncertain is ChexpertUncertainPolicy.COMPETITION:
        return COMPETITION_UNCERTAIN.get(name)
    return {
        ChexpertUncertainPolicy.ONES: 1.0, ChexpertUncertainPolicy.ZEROS: 0.0, ChexpertUncertainPolicy.IGNORE: None
    }[uncertain]


def _row(image: _Image, split: Split, uncertain: ChexpertUncertainPolicy, blank: BlankPolicy) -> ManifestRow:
    labels = {name: policy_label(image.labels[name], name, uncertain, blank) for name in CHEXPERT_LABELS}
    return image_row(image.image_id, image.study, image.patient, split, image.view, image.image_path, labels)


def _kept_images(root: Path, table: Path, frontal_only: bool, excluded: list[Exclusion]) -> Iterator[_Image]:
    required = (PATH_COLUMN, FRONTAL_COLUMN, VIEW_COLUMN) + CHEXPERT_LABELS
    for line_number, record in read_csv_records(table, required):
        image = _image(record, table, line_number)
        if frontal_only and record[FRONTAL_COLUMN] != "Frontal":
            reason = LATERAL_IMAGE
        elif not os.path.isfile(root / image.image_path):
            reason = IMAGE_MISSING
        else:
            yield image
            continue
        excluded.append(Exclusion(image.image_id, image.study, image.patient, image.image_path, reason))


def _image(record: dict[str, str], table: Path, line_number: int) -> _Image:
    parts = record[PATH_COLUMN].split("/")
    if len(parts) != 5 or parts[1] not in IMAGE_FOLDERS or not all(parts):
        raise DownstreamLayoutError(
            f"{table} line {line_number}: Path {record[PATH_COLUMN]!r} is not "
            "<dataset folder>/<train|valid>/<patient>/<study>/<image file>"
        )
    _, _, patient, study, file_name = parts
    labels = {}
    for name in CHEXPERT_LABELS:
        try:
            labels[name] = parse_label(record[name])
        except ValueError as error:
            raise DownstreamLayoutError(f"{table} line {line_number} column {name!r}: {error}") from error
    return _Image(
        image_path="/".join(parts[1:]),
        patient=patient,
        study=f"{patient}/{study}",
        image_id=f"{patient}/{study}/{Path(file_name).stem}",
        view=record[VIEW_COLUMN],
        labels=labels,
    )
