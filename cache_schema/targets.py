"""Segmentation targets as manifest strings: SIIM run-lengths or RSNA boxes, decoded to boolean masks.

A manifest row's `mask` cell holds one target string, self-describing so that a reader needs no
image to rasterise it:

- `rle:<H>x<W>:<gap length gap length ...>`: SIIM-ACR's run-length encoding (the Kaggle
  "relative" form of `train-rle.csv`): pixels are numbered down each column in turn (column-major),
  and each run is given as its start offset counted from the end of the previous run, then its
  length. No runs (`rle:<H>x<W>:`) is an empty mask; SIIM writes that as `-1`.
- `boxes:<H>x<W>:x,y,w,h;x,y,w,h`: RSNA Pneumonia's opacity boxes in pixels (x to the right,
  y down); a pixel belongs to a box when its centre lies inside it. No boxes is an empty mask.

numpy only, no image decoder: the evaluate stage imports this module to read masks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np

SIIM_NO_MASK = "-1"
"""What SIIM's `train-rle.csv` writes for an image without pneumothorax."""

_TARGET = re.compile(r"(?P<kind>[a-z]+):(?P<height>\d+)x(?P<width>\d+):(?P<body>.*)", re.DOTALL)
_SHOWN_CHARACTERS = 80
"""How much of a long target string an error message quotes."""


class TargetError(ValueError):
    """A target string that is not a well-formed `rle:` or `boxes:` target, or asks for an impossible mask."""


class TargetKind(str, Enum):
    """The two target encodings a manifest may hold."""

    RLE = "rle"
    BOXES = "boxes"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: top-left corner (x right, y down), width and height."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class TargetHeader:
    """What a target string says about itself before its body is decoded."""

    kind: TargetKind
    height: int
    width: int


def parse_target_header(target: str) -> TargetHeader:
    """The kind and mask size a target declares; raises TargetError for anything else."""
    match = _TARGET.fullmatch(target)
    if match is None:
        raise TargetError(f"target {_shown(target)} is not of the form rle:<H>x<W>:<runs> or boxes:<H>x<W>:<boxes>")
    try:
        kind = TargetKind(match["kind"])
    except ValueError:
        raise TargetError(f"target {_shown(target)} has unknown kind {match['kind']!r}: use rle or boxes") from None
    height, width = int(match["height"]), int(match["width"])
    if height == 0 or width == 0:
        raise TargetError(f"target {_shown(target)} declares an empty {height}x{width} mask")
    return TargetHeader(kind, height, width)


def decode_mask(target: str, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """A target string as an (H, W) boolean mask, or resampled to `out_size` = (height, width).

    Resampling takes, for each output pixel, the full-size pixel under its centre (nearest
    neighbour), so a mask and its image stay aligned at any size.
    """
    header = parse_target_header(target)
    body = target.split(":", 2)[2]
    if header.kind is TargetKind.RLE:
        mask = _decode_runs(body, header.height, header.width, target)
    else:
        mask = _rasterise_boxes(_parse_boxes(body, target), header.height, header.width)
    if out_size is None or tuple(out_size) == mask.shape:
        return mask
    return _resample_nearest(mask, out_size, target)


def decode_siim_rle(encoded_pixels: str, height: int, width: int) -> np.ndarray:
    """One `EncodedPixels` cell of SIIM's `train-rle.csv` (`-1` for none) as an (H, W) boolean mask."""
    text = encoded_pixels.strip()
    if text == SIIM_NO_MASK:
        return np.zeros((height, width), dtype=bool)
    return _decode_runs(text, height, width, encoded_pixels)


def encode_siim_rle(mask: np.ndarray) -> str:
    """An (H, W) boolean mask as SIIM's `EncodedPixels`: column-major relative run-lengths, `-1` when empty."""
    runs = _runs(mask)
    return " ".join(str(value) for value in runs) if len(runs) else SIIM_NO_MASK


def encode_rle_target(mask: np.ndarray) -> str:
    """An (H, W) boolean mask as an `rle:` target in SIIM's column-major relative run-lengths."""
    runs = _runs(mask)
    return f"{TargetKind.RLE.value}:{mask.shape[0]}x{mask.shape[1]}:" + " ".join(str(value) for value in runs)


def encode_boxes_target(boxes: Sequence[Box], height: int, width: int) -> str:
    """Boxes on an (H, W) image as a `boxes:` target; no boxes is an empty mask."""
    for box in boxes:
        _check_box(box, f"box {box}")
    body = ";".join(",".join(_number(value) for value in (box.x, box.y, box.width, box.height)) for box in boxes)
    target = f"{TargetKind.BOXES.value}:{height}x{width}:{body}"
    parse_target_header(target)
    return target


def _runs(mask: np.ndarray) -> np.ndarray:
    """(gap, length) pairs, flattened, of the mask's runs down its columns (SIIM's relative encoding)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise TargetError(f"a mask to encode must be a non-empty 2-D array, got shape {mask.shape}")
    height, width = mask.shape
    row_major = np.flatnonzero(mask)
    pixels = np.sort(row_major % width * height + row_major // width)
    if len(pixels) == 0:
        return pixels
    breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
    starts = pixels[np.concatenate(([0], breaks))]
    ends = pixels[np.concatenate((breaks - 1, [len(pixels) - 1]))] + 1
    gaps = starts - np.concatenate(([0], ends[:-1]))
    return np.column_stack((gaps, ends - starts)).reshape(-1)


def _decode_runs(body: str, height: int, width: int, target: str) -> np.ndarray:
    try:
        values = np.array(body.split(), dtype=np.int64)
    except ValueError:
        raise TargetError(f"target {_shown(target)}: run-lengths must be whole numbers") from None
    if len(values) % 2:
        raise TargetError(f"target {_shown(target)}: {len(values)} numbers, expected (gap, length) pairs")
    if (values < 0).any():
        raise TargetError(f"target {_shown(target)}: negative gap or length")
    gaps, lengths = values[0::2], values[1::2]
    ends = np.cumsum(gaps + lengths)
    if len(ends) and ends[-1] > height * width:
        raise TargetError(
            f"target {_shown(target)}: runs end at pixel {ends[-1]}, beyond the {height}x{width} mask "
            "(absolute rather than relative start offsets?)"
        )
    starts = ends - lengths
    pixels = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    mask = np.zeros(height * width, dtype=bool)
    mask[pixels % height * width + pixels // height] = True
    return mask.reshape(height, width)


def _parse_boxes(body: str, target: str) -> list[Box]:
    if body == "":
        return []
    boxes = []
    for text in body.split(";"):
        try:
            x, y, width, height = (float(value) for value in text.split(","))
        except ValueError:
            raise TargetError(f"target {_shown(target)}: box {text!r} is not four numbers x,y,w,h") from None
        box = Box(x, y, width, height)
        _check_box(box, f"target {_shown(target)}: box {text!r}")
        boxes.append(box)
    return boxes


def _check_box(box: Box, context: str) -> None:
    values = (box.x, box.y, box.width, box.height)
    if not all(np.isfinite(values)) or box.width < 0 or box.height < 0:
        raise TargetError(f"{context} must have finite coordinates and a non-negative width and height")


def _rasterise_boxes(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        rows = _covered_pixels(box.y, box.height, height)
        columns = _covered_pixels(box.x, box.width, width)
        mask[rows, columns] = True
    return mask


def _covered_pixels(start: float, extent: float, size: int) -> slice:
    """Pixels p whose centre p + 0.5 lies in [start, start + extent), clipped to the image."""
    first = int(np.ceil(start - 0.5))
    stop = int(np.ceil(start + extent - 0.5))
    return slice(min(max(first, 0), size), min(max(stop, 0), size))


def _resample_nearest(mask: np.ndarray, out_size: tuple[int, int], target: str) -> np.ndarray:
    out_height, out_width = (int(value) for value in out_size)
    if out_height <= 0 or out_width <= 0:
        raise TargetError(f"cannot resample target {_shown(target)} to {out_size}: sizes must be positive")
    rows = _source_pixels(out_height, mask.shape[0])
    columns = _source_pixels(out_width, mask.shape[1])
    return mask[np.ix_(rows, columns)]


def _source_pixels(out_size: int, in_size: int) -> np.ndarray:
    """For each output pixel, the input pixel under its centre."""
    return np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64), in_size - 1)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _shown(target: str) -> str:
    if len(target) <= _SHOWN_CHARACTERS:
        return repr(target)
    return repr(target[:_SHOWN_CHARACTERS] + "...")
