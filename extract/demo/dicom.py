"""Write demo radiographs as DICOM files the way SIIM-ACR and RSNA ship theirs: 8-bit grey, JPEG baseline inside."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

from adaptor_vlp.extract.demo.radiograph import encode_jpeg


@dataclass(frozen=True)
class DicomIdentity:
    """Who and what a DICOM file shows: patient, view position and its study, series and instance UIDs."""

    patient_id: str
    view: str
    study_uid: str
    series_uid: str
    instance_uid: str


def encode_dicom(pixels: np.ndarray, identity: DicomIdentity) -> bytes:
    """A (rows, columns) uint8 image as the bytes of a JPEG-compressed MONOCHROME2 DICOM file."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"a DICOM frame must be a 2-D uint8 array, got {pixels.dtype} of shape {pixels.shape}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = identity.instance_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = identity.instance_uid
    dataset.StudyInstanceUID = identity.study_uid
    dataset.SeriesInstanceUID = identity.series_uid
    dataset.PatientID = identity.patient_id
    dataset.Modality = "CR"
    dataset.BodyPartExamined = "CHEST"
    dataset.ViewPosition = identity.view
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = encapsulate([encode_jpeg(pixels)])
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
