"""Write a demo downstream dataset in the RSNA Pneumonia Detection Challenge layout: visible opacities and their boxes.

`root/stage_2_train_labels.csv` (patientId, x, y, width, height, Target: one row per box, one row
with empty coordinates and Target 0 for an image without pneumonia) and the DICOMs at
`root/stage_2_train_images/<patientId>.dcm`, one image per patient as in the challenge. About 35%
of images show pneumonia, a dense lower-lobe airspace opacity on one side or on both (two boxes);
each box bounds the opacity's core where the drawing puts it, in the image's pixels. Images
without pneumonia may show other findings (effusion, cardiomegaly, devices), as the challenge's
"not normal" class does. One listed image is missing on disk, as a fault.

The default size gives a 1% training subset of about ten images (70% of the patients train).
"""
from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adaptor_vlp.cache_schema.targets import Box
from adaptor_vlp.extract.datasets.rsna import IMAGES_FOLDER, LABEL_COLUMNS, LABELS_TABLE
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.dicom import DicomIdentity, encode_dicom
from adaptor_vlp.extract.demo.exposure import PORTABLE_RATE, Exposure, dicom_uid, drawing_seed, expose
from adaptor_vlp.extract.demo.findings import (
    AirspaceAppearance,
    AirspaceDisease,
    Certainty,
    Side,
    sample_findings,
    sample_traits,
)
from adaptor_vlp.extract.demo.pathology import airspace_regions
from adaptor_vlp.extract.demo.preflight import check_empty_folder, check_image_count

MIN_IMAGES = 12
"""Enough images for a patient-wise 70/15/15 split with both classes likely in each split."""
DEFAULT_IMAGES = 1200
_PNEUMONIA_RATE = 0.35
_BILATERAL_RATE = 0.3


@dataclass(frozen=True)
class _DemoImage:
    """One planned image: its patient (= image) id, DICOM identity and exposure."""

    identity: DicomIdentity
    exposure: Exposure

    @property
    def patient_id(self) -> str:
        return self.identity.patient_id

    @property
    def path(self) -> str:
        return f"{IMAGES_FOLDER}/{self.patient_id}.dcm"


@dataclass(frozen=True)
class RsnaDemoSummary:
    """What `write_demo_rsna` wrote."""

    root: Path
    images_listed: int
    images_written: int
    positive_images: int
    boxes: int
    missing_image: str

    def lines(self) -> list[str]:
        """A human-readable account, one line per fact."""
        return [
            f"demo RSNA Pneumonia tree at {self.root}",
            f"{self.images_listed} patients (one image each) listed in {LABELS_TABLE}, {self.positive_images} with "
            f"pneumonia ({self.boxes} boxes: one row per box)",
            f"{self.images_written} DICOM files written",
            "planted faults:",
            f"  image listed in {LABELS_TABLE} but missing on disk: {self.missing_image}",
        ]


def write_demo_rsna(out: Path, images: int = DEFAULT_IMAGES, seed: int = 0) -> RsnaDemoSummary:
    """Write a deterministic demo RSNA tree (same seed, same bytes) into `out`, which must be empty or absent."""
    check_image_count("RSNA", images, MIN_IMAGES)
    check_empty_folder(out)
    rng = np.random.default_rng(seed)
    planned = [_plan_image(rng) for _ in range(images)]
    missing = planned[int(rng.integers(len(planned)))]
    table_rows: list[tuple[str, Box | None]] = []
    for image in planned:
        pixels, boxes = _draw(image)
        if image is not missing:
            path = out / image.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_dicom(pixels, image.identity))
        table_rows += [(image.patient_id, box) for box in boxes] or [(image.patient_id, None)]
    out.mkdir(parents=True, exist_ok=True)
    (out / LABELS_TABLE).write_text(_table_text(table_rows), encoding="utf-8")
    return RsnaDemoSummary(
        root=out,
        images_listed=len(planned),
        images_written=len(planned) - 1,
        positive_images=sum(image.exposure.findings.airspace is not None for image in planned),
        boxes=sum(box is not None for _, box in table_rows),
        missing_image=missing.path,
    )


def _plan_image(rng: np.random.Generator) -> _DemoImage:
    """One patient's single frontal image, with pneumonia or without (other findings possible)."""
    patient_id = str(uuid.UUID(bytes=rng.bytes(16)))
    anatomy, traits = sample_anatomy(rng), sample_traits(rng)
    portable = bool(rng.random() < PORTABLE_RATE)
    findings = replace(sample_findings(rng, traits, portable), airspace=_pneumonia(rng))
    exposure = Exposure(anatomy, portable, findings, drawing_seed(rng))
    return _DemoImage(DicomIdentity(patient_id, exposure.view, dicom_uid(rng), dicom_uid(rng), dicom_uid(rng)),
                      exposure)


def _pneumonia(rng: np.random.Generator) -> AirspaceDisease | None:
    if rng.random() >= _PNEUMONIA_RATE:
        return None
    side = Side.BOTH if rng.random() < _BILATERAL_RATE else (Side.RIGHT, Side.LEFT)[int(rng.integers(2))]
    return AirspaceDisease(side, AirspaceAppearance.CONSOLIDATION, Certainty.DEFINITE)


def _draw(image: _DemoImage) -> tuple[np.ndarray, list[Box]]:
    """The image's pixels and one box per opacity (none without pneumonia)."""
    exposed = expose(image.exposure)
    pixels, chest = exposed.pixels, exposed.chest
    airspace = image.exposure.findings.airspace
    if airspace is None:
        return pixels, []
    return pixels, [_bounding_box(region) for region in airspace_regions(airspace, chest) if region.any()]


def _bounding_box(region: np.ndarray) -> Box:
    """The smallest box holding the region, in pixels (x, y of the top-left corner, width, height)."""
    rows, columns = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    top, left = int(rows[0]), int(columns[0])
    return Box(float(left), float(top), float(columns[-1] + 1 - left), float(rows[-1] + 1 - top))


def _table_text(rows: list[tuple[str, Box | None]]) -> str:
    """`stage_2_train_labels.csv` as Kaggle ships it: coordinates as floats, empty for an image without a box."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for patient_id, box in rows:
        if box is None:
            writer.writerow((patient_id, "", "", "", "", "0"))
        else:
            writer.writerow((patient_id, box.x, box.y, box.width, box.height, "1"))
    return buffer.getvalue()
