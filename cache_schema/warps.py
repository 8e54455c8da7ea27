"""Seeded ShiftScaleRotate warps of segmentation views, shared by the image (extract) and its mask (evaluate).

The published segmentation runs drew albumentations' ShiftScaleRotate(shift_limit=0, scale_limit=0.1,
rotate_limit=10, p=0.5, border_mode=cv2.BORDER_CONSTANT) for every training image at every epoch
(MGCA/mgca/datasets/segmentation_dataset.py:149-155), after resizing image and mask to the crop size:
with probability 0.5 a rotation by an angle uniform in [-10, 10] degrees and a scaling uniform in
[0.9, 1.1] about the image centre, corners filled with 0; the image sampled bilinearly, the mask by
nearest neighbour. Here view k of sample s is the warp drawn from the seed `view_seed(s, k)`, so
extraction warps the image once and evaluation warps the mask with the very same matrix and sampling
grid, whatever machine or run recomputes it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class ShiftScaleRotate:
    """The ranges a warp is drawn from (albumentations' names); the defaults are the published ones."""

    shift_limit: float = 0.0
    scale_limit: float = 0.1
    rotate_limit: float = 10.0
    probability: float = 0.5

    def record(self) -> dict[str, Any]:
        """The ranges and the rules that turn a (sample, view) into a warp, for a store's provenance."""
        return {**asdict(self), "border": "constant 0", "image": "bilinear", "mask": "nearest",
                "centre": "((W - 1) / 2, (H - 1) / 2)", "seed": "sha256(sample id NUL view index)[:8] little-endian",
                "draws": "numpy PCG64: apply < probability, angle, scale, dx, dy"}


PUBLISHED_SHIFT_SCALE_ROTATE = ShiftScaleRotate()


@dataclass(frozen=True)
class Warp:
    """One drawn warp: rotation (degrees, counter-clockwise as cv2.getRotationMatrix2D), scale and shift (fractions
    of the side); `applied` False is the identity (the probability draw failed)."""

    applied: bool
    angle: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0


def view_seed(sample_id: str, view_index: int) -> int:
    """The seed of augmented view `view_index` of a sample: stable across runs and machines."""
    digest = hashlib.sha256(f"{sample_id}\x00{view_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def draw_warp(seed: int, ranges: ShiftScaleRotate = PUBLISHED_SHIFT_SCALE_ROTATE) -> Warp:
    """The warp of `seed`: five uniform draws, the first deciding whether a warp is applied at all."""
    apply, angle, scale, shift_x, shift_y = np.random.Generator(np.random.PCG64(seed)).random(5)
    if apply >= ranges.probability:
        return Warp(applied=False)
    return Warp(applied=True,
                angle=float((2 * angle - 1) * ranges.rotate_limit),
                scale=float(1 + (2 * scale - 1) * ranges.scale_limit),
                shift_x=float((2 * shift_x - 1) * ranges.shift_limit),
                shift_y=float((2 * shift_y - 1) * ranges.shift_limit))


def warp_image(image: np.ndarray, warp: Warp, fill: Sequence[float]) -> np.ndarray:
    """A (C, H, W) float image warped bilinearly; pixels from outside take `fill` (one value per channel)."""
    if not warp.applied:
        return image
    rows, cols, inside = _sources(warp, *image.shape[-2:])
    top, left = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    down, right = rows - top, cols - left
    padded = np.stack([np.pad(channel, 1, constant_values=value) for channel, value in zip(image, fill)])
    height, width = image.shape[-2:]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return padded[:, np.clip(r + 1, 0, height + 1), np.clip(c + 1, 0, width + 1)]

    warped = (at(top, left) * (1 - down) * (1 - right) + at(top, left + 1) * (1 - down) * right
              + at(top + 1, left) * down * (1 - right) + at(top + 1, left + 1) * down * right)
    outside = ~inside
    warped[:, outside] = np.asarray(fill, dtype=warped.dtype)[:, None]
    return warped.astype(image.dtype)


def warp_mask(mask: np.ndarray, warp: Warp) -> np.ndarray:
    """A boolean (H, W) mask warped by nearest neighbour on the same sampling grid; outside is background."""
    if not warp.applied:
        return mask
    rows, cols, _ = _sources(warp, *mask.shape)
    nearest_rows, nearest_cols = np.floor(rows + 0.5).astype(np.int64), np.floor(cols + 0.5).astype(np.int64)
    inside = (nearest_rows >= 0) & (nearest_rows < mask.shape[0]) & (nearest_cols >= 0) & (nearest_cols < mask.shape[1])
    picked = mask[np.clip(nearest_rows, 0, mask.shape[0] - 1), np.clip(nearest_cols, 0, mask.shape[1] - 1)]
    return picked & inside


def _sources(warp: Warp, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each output pixel centre comes from in the input (row, column), and whether that lies inside it.

    The forward map is cv2.getRotationMatrix2D(centre, angle, scale) plus the shift; sampling inverts it.
    """
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    theta = math.radians(warp.angle)
    alpha, beta = warp.scale * math.cos(theta), warp.scale * math.sin(theta)
    forward = np.array([[alpha, beta, (1 - alpha) * centre_x - beta * centre_y + warp.shift_x * width],
                        [-beta, alpha, beta * centre_x + (1 - alpha) * centre_y + warp.shift_y * height]])
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    out_y, out_x = np.mgrid[0:height, 0:width].astype(np.float64)
    cols = inverse[0, 0] * out_x + inverse[0, 1] * out_y + inverse[0, 2]
    rows = inverse[1, 0] * out_x + inverse[1, 1] * out_y + inverse[1, 2]
    inside = (rows > -1) & (rows < height) & (cols > -1) & (cols < width)
    return rows, cols, inside
