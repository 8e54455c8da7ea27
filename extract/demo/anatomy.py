"""A patient's chest geometry for the demo radiographs, in fractions of the image side.

Each patient gets one `Anatomy`; each image of that patient is a slightly shifted copy of it, as
repeat radiographs of one person differ by positioning.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Mapping

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Anatomy:
    """Where the structures of a frontal chest radiograph lie (x to the image's right, y down)."""

    midline: float
    apex: float
    diaphragm: float
    lung_half_width: float
    mediastinum_half_width: float
    heart_half_width: float
    heart_half_height: float
    rib_spacing: float
    brightness: float

    def lung_centre(self, image_side: int) -> float:
        """x of a lung's centre; `image_side` is -1 for the image's left (patient's right), +1 for its right."""
        return self.midline + image_side * (self.mediastinum_half_width + self.lung_half_width)

    def dome(self, image_side: int) -> float:
        """y of a hemidiaphragm's top; the patient's left dome (image right) sits a little lower."""
        return self.diaphragm + (0.02 if image_side > 0 else 0.0)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A patient's geometry, varied within a normal adult range."""
    return Anatomy(
        midline=0.5 + rng.uniform(-0.015, 0.015),
        apex=rng.uniform(0.12, 0.16),
        diaphragm=rng.uniform(0.70, 0.76),
        lung_half_width=rng.uniform(0.155, 0.18),
        mediastinum_half_width=rng.uniform(0.055, 0.07),
        heart_half_width=rng.uniform(0.115, 0.13),
        heart_half_height=rng.uniform(0.09, 0.105),
        rib_spacing=rng.uniform(0.058, 0.066),
        brightness=rng.uniform(0.9, 1.1),
    )


def position(anatomy: Anatomy, rng: np.random.Generator, portable: bool) -> Anatomy:
    """One exposure of the patient: small shifts, and for a bedside AP film a shallower inspiration."""
    return replace(
        anatomy,
        midline=anatomy.midline + rng.uniform(-0.012, 0.012),
        apex=anatomy.apex + rng.uniform(-0.01, 0.01),
        diaphragm=anatomy.diaphragm + rng.uniform(-0.012, 0.012) - (0.04 if portable else 0.0),
        brightness=anatomy.brightness * rng.uniform(0.95, 1.05),
    )


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of a square image as fractions of its side."""

    x: np.ndarray
    y: np.ndarray

    @property
    def side(self) -> int:
        """The image side in pixels."""
        return self.x.shape[0]


@lru_cache(maxsize=4)
def grid(side: int) -> Grid:
    """The shared coordinate grid for images of `side` pixels (read-only)."""
    coordinates = (np.arange(side, dtype=np.float32) + 0.5) / side
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return Grid(x=x, y=y)


def lung_mask(anatomy: Anatomy, image_side: int, coordinates: Grid) -> np.ndarray:
    """One lung field: a rounded apex, straight walls, and a domed base with a sharp costophrenic angle."""
    u = (coordinates.x - anatomy.lung_centre(image_side)) / anatomy.lung_half_width
    cap = anatomy.apex + 0.12
    rounded_top = u**2 + ((coordinates.y - cap) / 0.12) ** 2 < 1.0
    walls = (np.abs(u) < 1.0) & (coordinates.y >= cap)
    above_dome = coordinates.y < anatomy.dome(image_side) + 0.09 * u**2
    return (rounded_top | walls) & above_dome


@dataclass(frozen=True)
class Chest:
    """One exposure's anatomy laid on a pixel grid, with both lung fields computed once."""

    anatomy: Anatomy
    grid: Grid
    lungs: Mapping[int, np.ndarray]

    def lateral_coordinate(self, image_side: int) -> np.ndarray:
        """Position across a lung: 0 at its centre, +1 at its lateral wall, -1 at its medial edge."""
        return image_side * (self.grid.x - self.anatomy.lung_centre(image_side)) / self.anatomy.lung_half_width


def lay_out(anatomy: Anatomy, side: int) -> Chest:
    """The anatomy on a `side`-pixel square grid."""
    coordinates = grid(side)
    lungs = {image_side: lung_mask(anatomy, image_side, coordinates) for image_side in (-1, 1)}
    return Chest(anatomy, coordinates, lungs)


def smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-scale noise varying over about side/cells pixels (lung markings, patchy opacity)."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC))
