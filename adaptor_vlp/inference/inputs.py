"""New radiographs as the extract stage decodes them: files (JPEG, PNG incl. 16-bit, DICOM incl. MONOCHROME1) or arrays.

Every input is decoded by `extract.images.read_decoded` at the decode size the Adaptor's
image store recorded, so a file embeds live exactly as it embedded into the cache. An array is
written losslessly to a PNG (8-bit for uint8, 16-bit for uint16) and read back through the same
function, so it takes the same path as a file, 16-bit stretch included. An input that cannot be
read becomes an `Unreadable` with its reason; the others go on.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image

from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.extract.images import DICOM_SUFFIXES, UnreadableImage, read_decoded
from adaptor_vlp.extract.images import DecodedImage as ExtractDecodedImage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", *DICOM_SUFFIXES)
"""Suffixes taken from a folder; a file without a suffix is taken too (DICOM files often have none)."""
ARRAY_DTYPES = (np.uint8, np.uint16)

ImageInput = Union[str, Path, np.ndarray]
"""A file path, or a grayscale (H, W) uint8 or uint16 array."""


@dataclass(frozen=True)
class NamedImage:
    """One input and the name it is reported under (its path, or `array-<i>` for an array)."""

    name: str
    source: Path | np.ndarray


@dataclass(frozen=True)
class Unreadable:
    """An input left out, with the reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class DecodedImage:
    """An input decoded to the uint8 (H, W) grayscale the backbone's preprocessing starts from.

    `frame`: the full-resolution (height, width) a reduced decode stands for, which the first resize
    takes its shape from, as in extraction (`extract.images.read_decoded`).
    """

    name: str
    gray: np.ndarray
    frame: tuple[int, int]


def collect_images(inputs: Iterable[ImageInput] | ImageInput) -> list[NamedImage]:
    """The inputs in order, each folder replaced by its image files (recursively, sorted by path).

    A path that does not exist is kept, to be reported as unreadable with its reason. A single
    input (one path or one array) is taken as a list of one.
    """
    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    collected = []
    for position, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            collected.append(NamedImage(f"array-{position}", item))
        elif Path(item).is_dir():
            collected.extend(NamedImage(str(path), path) for path in _image_files(Path(item)))
        else:
            collected.append(NamedImage(str(item), Path(item)))
    return collected


def decode_images(images: Sequence[NamedImage], decode: DecodeSize) -> Iterator[DecodedImage | Unreadable]:
    """Each image decoded at `decode`, in order; an unreadable one as its reason."""
    with tempfile.TemporaryDirectory(prefix="adaptor-arrays-") as scratch:
        for image in images:
            try:
                decoded = _decode(image, decode, Path(scratch))
                yield DecodedImage(image.name, decoded.gray, decoded.frame)
            except UnreadableImage as error:
                yield Unreadable(image.name, error.reason)


def _decode(image: NamedImage, decode: DecodeSize, scratch: Path) -> ExtractDecodedImage:
    if not isinstance(image.source, np.ndarray):
        return read_decoded(image.source, decode.pixels)
    array = image.source
    if array.ndim != 2 or array.dtype not in ARRAY_DTYPES or min(array.shape) < 1:
        raise UnreadableImage(image.name, f"array of dtype {array.dtype} and shape {array.shape}; give a grayscale "
                                          "(H, W) uint8 or uint16 array")
    path = scratch / "array.png"
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return read_decoded(path, decode.pixels)


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")
                  if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
                  and (path.suffix.lower() in IMAGE_SUFFIXES or not path.suffix))
