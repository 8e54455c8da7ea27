"""Write a demo downstream dataset in the SIIM-ACR Pneumothorax layout: visible pneumothoraces and their masks.

`root/train-rle.csv` (ImageId, EncodedPixels, spelled with the original's leading spaces) and the
DICOMs at `root/dicom-images-train/<study uid>/<series uid>/<ImageId>.dcm`. About 40% of images
show a pneumothorax; a bilateral one is two components, so two table rows, as in the real file.
Each mask is where the drawing puts pleural air (the heart, drawn later, may cover a sliver of
it), at the image's resolution, so a segmentation head has something true to learn. One listed
image is missing on disk, as a fault. The default size gives a 1% training subset of about ten
images (70% of the patients train).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adaptor_vlp.cache_schema.targets import SIIM_NO_MASK, encode_siim_rle
from adaptor_vlp.extract.datasets.siim import IMAGES_FOLDER, LABELS_TABLE
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.dicom import DicomIdentity, encode_dicom
from adaptor_vlp.extract.demo.exposure import PORTABLE_RATE, Exposure, dicom_uid, drawing_seed, expose
from adaptor_vlp.extract.demo.findings import Pneumothorax, Severity, Side, sample_findings, sample_traits
from adaptor_vlp.extract.demo.pathology import pneumothorax_region
from adaptor_vlp.extract.demo.preflight import check_empty_folder, check_image_count

MIN_IMAGES = 12
"""Enough images for a patient-wise 70/15/15 split with both classes likely in each split."""
DEFAULT_IMAGES = 1200
_PNEUMOTHORAX_RATE = 0.4
_BILATERAL_RATE = 0.15
_SECOND_IMAGE_RATE = 0.3


@dataclass(frozen=True)
class _DemoImage:
    """One planned image: who, which view, what it shows, and the seed that draws it."""

    identity: DicomIdentity
    exposure: Exposure

    @property
    def image_id(self) -> str:
        return self.identity.instance_uid

    @property
    def path(self) -> str:
        return f"{IMAGES_FOLDER}/{self.identity.study_uid}/{self.identity.series_uid}/{self.image_id}.dcm"


@dataclass(frozen=True)
class SiimDemoSummary:
    """What `write_demo_siim` wrote."""

    root: Path
    patients: int
    images_listed: int
    images_written: int
    positive_images: int
    bilateral_images: int
    missing_image: str

    def lines(self) -> list[str]:
        """A human-readable account, one line per fact."""
        return [
            f"demo SIIM-ACR Pneumothorax tree at {self.root}",
            f"{self.patients} patients, {self.images_listed} images listed in {LABELS_TABLE}, "
            f"{self.positive_images} with pneumothorax ({self.bilateral_images} bilateral: two rows each)",
            f"{self.images_written} DICOM files written",
            "planted faults:",
            f"  image listed in {LABELS_TABLE} but missing on disk: {self.missing_image}",
        ]


def write_demo_siim(out: Path, images: int = DEFAULT_IMAGES, seed: int = 0) -> SiimDemoSummary:
    """Write a deterministic demo SIIM tree (same seed, same bytes) into `out`, which must be empty or absent."""
    check_image_count("SIIM", images, MIN_IMAGES)
    check_empty_folder(out)
    rng = np.random.default_rng(seed)
    planned = _plan_images(rng, images)
    missing = planned[int(rng.integers(len(planned)))]
    table_rows = []
    for image in planned:
        pixels, components = _draw(image)
        if image is not missing:
            path = out / image.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_dicom(pixels, image.identity))
        table_rows += [(image.image_id, encoded) for encoded in components]
    out.mkdir(parents=True, exist_ok=True)
    (out / LABELS_TABLE).write_text(_table_text(table_rows), encoding="utf-8")
    positives = [image.exposure.findings.pneumothorax for image in planned
                 if image.exposure.findings.pneumothorax is not None]
    return SiimDemoSummary(
        root=out,
        patients=len({image.identity.patient_id for image in planned}),
        images_listed=len(planned),
        images_written=len(planned) - 1,
        positive_images=len(positives),
        bilateral_images=sum(pneumothorax.side is Side.BOTH for pneumothorax in positives),
        missing_image=missing.path,
    )


def _plan_images(rng: np.random.Generator, count: int) -> list[_DemoImage]:
    """Patients with one or two frontal images each until `count` images are planned."""
    planned: list[_DemoImage] = []
    while len(planned) < count:
        patient_id = rng.bytes(16).hex()
        anatomy, traits = sample_anatomy(rng), sample_traits(rng)
        for _ in range(min(2 if rng.random() < _SECOND_IMAGE_RATE else 1, count - len(planned))):
            portable = bool(rng.random() < PORTABLE_RATE)
            findings = replace(sample_findings(rng, traits, portable), pneumothorax=_pneumothorax(rng))
            exposure = Exposure(anatomy, portable, findings, drawing_seed(rng))
            identity = DicomIdentity(patient_id, exposure.view, dicom_uid(rng), dicom_uid(rng), dicom_uid(rng))
            planned.append(_DemoImage(identity, exposure))
    return planned


def _pneumothorax(rng: np.random.Generator) -> Pneumothorax | None:
    if rng.random() >= _PNEUMOTHORAX_RATE:
        return None
    side = Side.BOTH if rng.random() < _BILATERAL_RATE else (Side.RIGHT, Side.LEFT)[int(rng.integers(2))]
    return Pneumothorax(side, (Severity.SMALL, Severity.MODERATE, Severity.LARGE)[int(rng.integers(3))])


def _draw(image: _DemoImage) -> tuple[np.ndarray, list[str]]:
    """The image's pixels and its `EncodedPixels` cells: one per pneumothorax side, or `-1`."""
    exposed = expose(image.exposure)
    pixels, chest = exposed.pixels, exposed.chest
    pneumothorax = image.exposure.findings.pneumothorax
    if pneumothorax is None:
        return pixels, [SIIM_NO_MASK]
    sides = (Side.RIGHT, Side.LEFT) if pneumothorax.side is Side.BOTH else (pneumothorax.side,)
    return pixels, [encode_siim_rle(pneumothorax_region(replace(pneumothorax, side=side), chest)) for side in sides]


def _table_text(rows: list[tuple[str, str]]) -> str:
    """`train-rle.csv` as Kaggle ships it: header 'ImageId, EncodedPixels', each value after ', '."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["ImageId", " EncodedPixels"])
    writer.writerows((image_id, f" {encoded}") for image_id, encoded in rows)
    return buffer.getvalue()
