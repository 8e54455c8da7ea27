"""Decoding radiographs (JPEG, PNG, DICOM, CheXzero-style HDF5) to 8-bit grayscale arrays.

Decoding is plain I/O and numpy, so a DataLoader worker can run it next to the torch transforms
in `extract.image_transforms`. A file that cannot be decoded raises `UnreadableImage` with the
reason; it is never replaced by a blank image, so the extractor can record and mask it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import h5py
import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
HIGH_DEPTH_PIL_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
DICOM_ERRORS = (InvalidDicomError, AttributeError, RuntimeError, NotImplementedError, *DECODE_ERRORS)


class UnreadableImage(Exception):
    """An image file (or HDF5 row) that is missing, corrupt, truncated or not a radiograph."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason}")


class Photometric(str, Enum):
    """The grayscale photometric interpretations a radiograph may use."""

    MONOCHROME1 = "MONOCHROME1"
    """Low values are bright: inverted after windowing so that bone is white as usual."""
    MONOCHROME2 = "MONOCHROME2"


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph and the (height, width) of its full-resolution frame (its own shape unless reduced)."""

    gray: np.ndarray
    frame: tuple[int, int]


def read_grayscale(path: Path | str, target_size: int | None = None) -> np.ndarray:
    """An image file as a uint8 (H, W) array, its shorter side resized to `target_size` (see `read_decoded`)."""
    return read_decoded(path, target_size).gray


def read_decoded(path: Path | str, target_size: int | None = None) -> DecodedImage:
    """An image file as a uint8 (H, W) array, its shorter side resized to `target_size`, with its full frame.

    JPEGs are decoded at a reduced DCT scale first (Pillow's draft mode), which makes the
    ~2500 x 3000 MIMIC-CXR-JPG radiographs cheap to bring down to model size. DICOM pixel data
    goes through the modality and VOI LUT (windowing), is stretched onto 0..255 and inverted when
    MONOCHROME1. `target_size=None` keeps the full resolution. The frame is the full-resolution
    shape, which a reduced image only approximates (its sides are rounded at the reduced size).
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage(path, "file not found")
    if _is_dicom(path):
        gray = _read_dicom(path)
        frame = gray.shape
    else:
        gray, frame = _read_with_pillow(path, target_size)
    if target_size is None:
        return DecodedImage(gray, frame)
    return DecodedImage(resize_shorter_side(gray, target_size), frame)


class HDF5ImageSource:
    """Radiographs stored CheXzero-style: one HDF5 file whose dataset `cxr` is N x H x W.

    Row i is the image of row i of the CSV that came with the file. Pixel values are 0..255
    (CheXzero stores them as float32). The file is opened lazily once per process, so the source
    can be handed to DataLoader worker processes.
    """

    DATASET = "cxr"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._opened_by_pid: int | None = None
        with self._open_file() as file:
            dataset = self._dataset(file)
            self.shape: tuple[int, ...] = tuple(dataset.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: int) -> np.ndarray:
        """Row `index` as a uint8 (H, W) array."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: row {index} is out of range (the file holds {len(self)} images)")
        try:
            pixels = np.asarray(self._dataset(self._handle())[index])
        except DECODE_ERRORS as error:
            raise UnreadableImage(self.path, f"row {index}: {_describe(error)}") from error
        if not np.isfinite(pixels).all():
            raise UnreadableImage(self.path, f"row {index}: non-finite pixel values")
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def close(self) -> None:
        """Closes this process's handle on the file, if open."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self._opened_by_pid = None

    def __enter__(self) -> HDF5ImageSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_file": None, "_opened_by_pid": None}

    def _handle(self) -> h5py.File:
        if self._file is None or self._opened_by_pid != os.getpid():
            self._file = self._open_file()
            self._opened_by_pid = os.getpid()
        return self._file

    def _open_file(self) -> h5py.File:
        if not self.path.is_file():
            raise UnreadableImage(self.path, "file not found")
        try:
            return h5py.File(self.path, "r")
        except DECODE_ERRORS as error:
            raise UnreadableImage(self.path, f"not a readable HDF5 file: {_describe(error)}") from error

    def _dataset(self, file: h5py.File) -> h5py.Dataset:
        dataset = file.get(self.DATASET)
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3:
            raise UnreadableImage(self.path, f"expected an N x H x W dataset named {self.DATASET!r}")
        return dataset


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as file:
        header = file.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    return header[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def _read_with_pillow(path: Path, target_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with Image.open(path) as image:
            frame = (image.height, image.width)
            if target_size is not None:
                image.draft("L", (target_size, target_size))
            image.load()
            if image.mode in HIGH_DEPTH_PIL_MODES:
                return _stretch_to_uint8(np.asarray(image, dtype=np.float64)), frame
            return np.array(image.convert("L"), dtype=np.uint8), frame
    except DECODE_ERRORS as error:
        raise UnreadableImage(path, _describe(error)) from error


def _read_dicom(path: Path) -> np.ndarray:
    try:
        dataset = pydicom.dcmread(path)
        interpretation = str(dataset.get("PhotometricInterpretation", ""))
        if interpretation not in {member.value for member in Photometric}:
            raise UnreadableImage(path, f"unsupported photometric interpretation {interpretation!r}")
        pixels = dataset.pixel_array
        if pixels.ndim != 2:
            raise UnreadableImage(path, f"pixel data of shape {pixels.shape}; expected one grayscale frame")
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset)
    except DICOM_ERRORS as error:
        raise UnreadableImage(path, _describe(error)) from error
    gray = _stretch_to_uint8(np.asarray(values, dtype=np.float64))
    if Photometric(interpretation) is Photometric.MONOCHROME1:
        return 255 - gray
    return gray


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps the array's value range linearly onto 0..255 (a constant image maps to 0)."""
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.rint((values - low) * scale).astype(np.uint8)


def resize_shorter_side(gray: np.ndarray, target_size: int) -> np.ndarray:
    """The image with its shorter side resized to `target_size` (bicubic), as a reduced decode ends."""
    height, width = gray.shape
    shorter = min(height, width)
    if shorter == target_size:
        return gray
    size = (max(1, round(width * target_size / shorter)), max(1, round(height * target_size / shorter)))
    return np.array(Image.fromarray(gray).resize(size, Image.Resampling.BICUBIC))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
