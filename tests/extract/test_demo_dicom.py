"""Demo DICOM files: JPEG baseline inside, readable by the image decoder and the downstream header reader."""
import numpy as np
import pytest

from adaptor_vlp.extract.datasets.dicom_header import read_dicom_header
from adaptor_vlp.extract.demo.dicom import DicomIdentity, encode_dicom
from adaptor_vlp.extract.images import read_grayscale

IDENTITY = DicomIdentity("patient-7", "AP", "2.25.11", "2.25.12", "2.25.13")


def test_written_dicom_decodes_to_the_image_and_carries_its_identity(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))
    path = tmp_path / "image.dcm"
    path.write_bytes(encode_dicom(pixels, IDENTITY))
    decoded = read_grayscale(path)
    assert decoded.shape == (40, 48)
    assert np.abs(decoded.astype(int) - pixels).mean() < 3  # lossy JPEG, close to the original
    header = read_dicom_header(path)
    assert (header.patient_id, header.view, header.rows, header.columns) == ("patient-7", "AP", 40, 48)
    assert encode_dicom(pixels, IDENTITY) == path.read_bytes()


def test_only_8_bit_single_frames_are_written():
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_dicom(np.zeros((4, 4), dtype=np.uint16), IDENTITY)
