"""What the demo downstream trees share: planned frontal radiographs, drawn with their targets' geometry, and
DICOM UIDs.

The SIIM-ACR, RSNA Pneumonia and COVIDx demo trees each plan patients and their frontal images,
then draw every image from its own seed. An `Exposure` is one planned image; `expose` draws it
and lays its anatomy on the same pixel grid, so a tree can compute the image's segmentation
target (pleural air, a box around an opacity) exactly where the drawing put the finding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptor_vlp.extract.demo.anatomy import Anatomy, Chest, lay_out, position
from adaptor_vlp.extract.demo.findings import StudyFindings
from adaptor_vlp.extract.demo.radiograph import draw_frontal

DOWNSTREAM_SIDE = 256
"""Pixels per side of a downstream demo image: the findings stay plain to see, and decoding and drawing stay cheap
(the backbones resize every image to their own input size anyway)."""
PORTABLE_RATE = 0.4
"""Share of bedside (AP) films among the downstream demo images."""


@dataclass(frozen=True)
class Exposure:
    """One planned frontal radiograph: the patient's anatomy, bedside (AP) or not, what it shows, its drawing seed."""

    anatomy: Anatomy
    portable: bool
    findings: StudyFindings
    seed: int

    @property
    def view(self) -> str:
        """The DICOM ViewPosition: AP for a bedside film, else PA."""
        return "AP" if self.portable else "PA"


@dataclass(frozen=True)
class ExposedImage:
    """A drawn exposure: its (side, side) uint8 pixels and its positioned anatomy laid on the same grid."""

    pixels: np.ndarray
    chest: Chest


def expose(exposure: Exposure, side: int = DOWNSTREAM_SIDE) -> ExposedImage:
    """The image's (side, side) uint8 pixels and its positioned anatomy laid on the same grid (for targets)."""
    rng = np.random.default_rng(exposure.seed)
    anatomy = position(exposure.anatomy, rng, portable=exposure.portable)
    pixels = draw_frontal(exposure.findings, anatomy, rng, portable=exposure.portable, side=side)
    return ExposedImage(pixels, lay_out(anatomy, side))


def dicom_uid(rng: np.random.Generator) -> str:
    """A UUID-derived DICOM UID (the 2.25 root), as anonymised datasets use."""
    return f"2.25.{int.from_bytes(rng.bytes(16), 'big')}"


def drawing_seed(rng: np.random.Generator) -> int:
    """A seed for one image's drawing, drawn from the tree's plan generator."""
    return int(rng.integers(2**31))
