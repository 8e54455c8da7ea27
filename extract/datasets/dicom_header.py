"""The few DICOM header fields a downstream reader needs: patient, view and image size, without the pixels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

_TAGS = ("PatientID", "ViewPosition", "Rows", "Columns")


class UnreadableHeader(Exception):
    """A DICOM file whose header cannot be read or lacks the image size."""


@dataclass(frozen=True)
class DicomHeader:
    """An image's patient id and view position ("" when absent) and its size in pixels."""

    patient_id: str
    view: str
    rows: int
    columns: int


def read_dicom_header(path: Path) -> DicomHeader:
    """The header of the DICOM file at `path`, read without its pixel data (one small read per file)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError) as error:
        raise UnreadableHeader(f"{path}: {type(error).__name__}: {error}") from error
    if rows <= 0 or columns <= 0:
        raise UnreadableHeader(f"{path}: image size {rows}x{columns}")
    return DicomHeader(
        patient_id=str(dataset.get("PatientID", "")).strip(),
        view=str(dataset.get("ViewPosition", "")).strip(),
        rows=rows,
        columns=columns,
    )
