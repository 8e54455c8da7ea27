"""The image geometry a store's provenance records (`preprocessing.geometry`), as shapes and windows.

Extraction records each image backbone's geometric steps (resize the shorter or longer side, resize
to a square, zero-pad to a square, crop the centre square or a centred window). The arithmetic of
those steps (output sizes, pad amounts, crop windows) lives here, in the package every stage may
import, so that the extract stage moves images and the evaluate stage moves segmentation masks
into the backbone's input frame by the same rules.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESIZE_OPS = ("resize_shortest", "resize_longest", "resize")


def resized_shape(op: str, size: int, height: int, width: int) -> tuple[int, int]:
    """(height, width) after a resize step.

    resize_shortest: shorter side to `size`, longer int(size * long / short) (torchvision's rule);
    resize_longest: longer side to `size`, shorter int(short * (size / long)) (MGCA's resize_img);
    resize: `size` x `size`. Never below one pixel.
    """
    if op == "resize_shortest":
        shape = (size, int(size * width / height)) if height <= width else (int(size * height / width), size)
    elif op == "resize_longest":
        shape = ((size, int(float(width) * (size / float(height)))) if height >= width
                 else (int(float(height) * (size / float(width))), size))
    elif op == "resize":
        shape = (size, size)
    else:
        raise ValueError(f"{op!r} is not a resize step")
    return max(1, shape[0]), max(1, shape[1])


def square_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding to a square: floor before, ceil after (MGCA's resize_img)."""
    pad = abs(height - width)
    before, after = pad // 2, pad - pad // 2
    return (0, 0, before, after) if height > width else (before, after, 0, 0)


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square of side min(H, W) (torchxrayvision's XRayCenterCrop)."""
    side = min(height, width)
    return height // 2 - side // 2, width // 2 - side // 2, side


def centre_window(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of a centred `size` x `size` window (torchvision's center_crop)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def mask_through_geometry(mask: np.ndarray, geometry: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A boolean (H, W) mask moved through recorded geometry steps, as the image was (nearest-neighbour resizes)."""
    for step in geometry:
        op, height, width = step["op"], *mask.shape
        if op in RESIZE_OPS:
            mask = _nearest(mask, *resized_shape(op, step["size"], height, width))
        elif op == "pad_square":
            top, bottom, left, right = square_padding(height, width)
            mask = np.pad(mask, ((top, bottom), (left, right)), constant_values=False)
        elif op == "crop_square":
            top, left, side = centre_square(height, width)
            mask = mask[top:top + side, left:left + side]
        elif op == "center_crop":
            size = step["size"]
            top, left = centre_window(height, width, size)
            padded = np.zeros((size, size), dtype=bool)  # a window larger than the mask is zero-filled
            rows = slice(max(top, 0), min(top + size, height))
            cols = slice(max(left, 0), min(left + size, width))
            padded[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = mask[rows, cols]
            mask = padded
        else:
            raise ValueError(f"unknown geometry step {op!r}")
    return mask


def _nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each output pixel takes the input pixel under its centre."""
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(int), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]
