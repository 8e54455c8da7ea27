"""Read SIIM-ACR Pneumothorax Segmentation (training set) into a `Manifest` with a pneumothorax label and mask.

Layout (Kaggle's): `train-rle.csv` with columns ImageId and EncodedPixels (the header spells the
second ' EncodedPixels'), one row per pneumothorax component, several rows for an image with
several components and `-1` for an image without pneumothorax; the DICOMs lie somewhere under
`dicom-images-train/` (nested `<study>/<series>/<ImageId>.dcm`), found by walking the folder once.

An image's components are joined into one mask (MGCA keeps a row per component, so one image can
land in several splits, each with part of its mask). Each DICOM header is read (not its pixels)
for the patient id, view and image size. The split is 70/15/15 with a fixed seed by the header's
PatientID, or by image where a header names no patient.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptor_vlp.cache_schema.manifest import Exclusion, Manifest
from adaptor_vlp.cache_schema.targets import TargetError, decode_siim_rle, encode_rle_target
from adaptor_vlp.extract.datasets.dicom_header import DicomHeader, UnreadableHeader, read_dicom_header
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError, find_file, read_csv_records
from adaptor_vlp.extract.datasets.rows import IMAGE_MISSING, UNREADABLE_HEADER, image_row, require_images
from adaptor_vlp.extract.datasets.splits import held_out, split_groups

DATASET = "siim"
LABELS_TABLE = "train-rle.csv"
IMAGES_FOLDER = "dicom-images-train"
LABEL_COLUMNS = ("ImageId", "EncodedPixels")
LABEL_NAMES: tuple[str, ...] = ("Pneumothorax",)
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
"""Train/validate/test 70/15/15, as MGCA splits it."""
DUPLICATE_FILE = "several DICOM files share the image id"


@dataclass(frozen=True)
class _Component:
    """One row of the run-length table: where it is (for errors) and its EncodedPixels."""

    line_number: int
    encoded_pixels: str


@dataclass(frozen=True)
class _Image:
    """A labelled image found on disk, with its header and its joined mask as a target string."""

    image_id: str
    image_path: str
    header: DicomHeader
    mask: str
    positive: bool


def read_siim(
    root: Path, val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0
) -> Manifest:
    """One row per labelled image (first-appearance order): Pneumothorax 1.0 when its mask is not empty.

    Images without a DICOM file, with several, or with an unreadable header are left out and
    listed in `excluded`. A run-length that does not fit its image is an error naming the table line.
    """
    fractions = held_out(val_fraction, test_fraction)
    hint = f"point --root at the SIIM-ACR Pneumothorax folder holding {LABELS_TABLE} and {IMAGES_FOLDER}/"
    table = find_file(root, LABELS_TABLE, hint)
    images_folder = root / IMAGES_FOLDER
    if not images_folder.is_dir():
        raise DownstreamLayoutError(f"{images_folder} is not a folder: {hint}")
    files, duplicates = _index_dicoms(root, images_folder)
    excluded: list[Exclusion] = []
    images = []
    for image_id, components in _components_per_image(table).items():
        if image_id in duplicates:
            excluded.append(Exclusion(image_id, image_id, "", duplicates[image_id], DUPLICATE_FILE))
        elif image_id not in files:
            excluded.append(Exclusion(image_id, image_id, "", "", IMAGE_MISSING))
        elif (image := _read_image(root, image_id, files[image_id], components, table, excluded)) is not None:
            images.append(image)
    require_images(len(images), table, excluded)
    splits = split_groups((_patient(image) for image in images), fractions, seed)
    rows = [
        image_row(image.image_id, image.image_id, _patient(image), splits[_patient(image)], image.header.view,
                  image.image_path, {LABEL_NAMES[0]: 1.0 if image.positive else 0.0}, image.mask)
        for image in images
    ]
    options = {"fractions": fractions.as_dict(), "seed": seed, "split_unit": "patient (DICOM PatientID, else image)"}
    return Manifest(DATASET, root, root, tuple(rows), options, label_names=LABEL_NAMES, excluded=tuple(excluded))


def _patient(image: _Image) -> str:
    return image.header.patient_id or image.image_id


def _read_image(
    root: Path, image_id: str, image_path: str, components: list[_Component], table: Path, excluded: list[Exclusion]
) -> _Image | None:
    """The image with its header and joined mask, or None (and the reason recorded) when its header is unreadable."""
    try:
        header = read_dicom_header(root / image_path)
    except UnreadableHeader:
        excluded.append(Exclusion(image_id, image_id, "", image_path, UNREADABLE_HEADER))
        return None
    mask = np.zeros((header.rows, header.columns), dtype=bool)
    for component in components:
        try:
            mask |= decode_siim_rle(component.encoded_pixels, header.rows, header.columns)
        except TargetError as error:
            raise DownstreamLayoutError(
                f"{table} line {component.line_number}: ImageId {image_id} ({header.rows}x{header.columns} "
                f"pixels): {error}"
            ) from error
    return _Image(image_id, image_path, header, encode_rle_target(mask), bool(mask.any()))


def _components_per_image(table: Path) -> dict[str, list[_Component]]:
    components: dict[str, list[_Component]] = {}
    for line_number, record in read_csv_records(table, LABEL_COLUMNS):
        if not record["ImageId"] or not record["EncodedPixels"]:
            raise DownstreamLayoutError(
                f"{table} line {line_number}: empty ImageId or EncodedPixels (write -1 for no pneumothorax)"
            )
        components.setdefault(record["ImageId"], []).append(_Component(line_number, record["EncodedPixels"]))
    return components


def _index_dicoms(root: Path, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each `.dcm` file under `folder` by its stem (the image id), as a POSIX path relative to `root`;
    and the stems found more than once, with their paths joined by ' | '."""
    files: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        for name in sorted(names):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() != ".dcm":
                continue
            path = Path(directory, name).relative_to(root).as_posix()
            if stem in files:
                duplicates[stem] = f"{duplicates.get(stem, files[stem])} | {path}"
            files[stem] = path
    return files, duplicates
