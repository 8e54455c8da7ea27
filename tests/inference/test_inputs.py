"""New radiographs in the formats a hospital has: a truncated file, a 16-bit PNG, a MONOCHROME1 DICOM, arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.inference import AdaptorModel
from adaptor_vlp.inference.inputs import DecodedImage, Unreadable, collect_images, decode_images

STEP = 16
"""Stored values 16 * k: stretched onto 0..255 they land exactly on k, so no rounding tie blurs a comparison."""


def _levels(seed: int, shape: tuple[int, int] = (90, 72)) -> np.ndarray:
    """An image of grey levels 0..255 that uses both extremes (so the stretch onto 0..255 is the identity)."""
    levels = np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint16)
    levels.flat[:2] = (0, 255)
    return levels


def write_monochrome1_dicom(path: Path, stored: np.ndarray) -> Path:
    """An uncompressed 12-bit MONOCHROME1 DICOM (low values bright) holding `stored`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def hospital_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    Image.fromarray(_levels(1) * STEP).save(folder / "a-16bit.png")
    write_monochrome1_dicom(folder / "b-monochrome1.dcm", _levels(2) * STEP)
    Image.fromarray(_levels(3).astype(np.uint8)).save(folder / "c-broken.png")
    (folder / "c-broken.png").write_bytes((folder / "c-broken.png").read_bytes()[:120])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_is_decoded_like_extraction_decodes_and_an_unreadable_file_is_listed(hospital_folder):
    decoded = list(decode_images(collect_images([hospital_folder]), DecodeSize(None)))

    names = [Path(item.name).name for item in decoded]
    assert names == ["a-16bit.png", "b-monochrome1.dcm", "c-broken.png"]
    sixteen_bit, monochrome1, broken = decoded
    assert isinstance(sixteen_bit, DecodedImage) and isinstance(monochrome1, DecodedImage)
    np.testing.assert_array_equal(sixteen_bit.gray, _levels(1).astype(np.uint8))
    np.testing.assert_array_equal(monochrome1.gray, 255 - _levels(2).astype(np.uint8))
    assert isinstance(broken, Unreadable) and "truncated" in broken.reason


def test_arrays_take_the_path_files_take(tmp_path):
    Image.fromarray(_levels(4) * STEP).save(tmp_path / "same.png")
    arrays = [_levels(4) * STEP, _levels(4).astype(np.uint8), np.zeros((4, 4), np.float32),
              np.zeros((2, 3, 3), np.uint8)]

    decoded = list(decode_images(collect_images([tmp_path / "same.png", *arrays]), DecodeSize(32)))

    from_file, uint16, uint8, floats, colour = decoded
    np.testing.assert_array_equal(uint16.gray, from_file.gray)
    np.testing.assert_array_equal(uint8.gray, from_file.gray)
    assert min(from_file.gray.shape) == 32
    assert isinstance(floats, Unreadable) and "float32" in floats.reason
    assert isinstance(colour, Unreadable) and floats.name == "array-3" and colour.name == "array-4"


@pytest.mark.slow
def test_the_model_embeds_the_readable_files_and_goes_on_past_the_broken_one(demo_run, hospital_folder):
    model = AdaptorModel.from_pretrained(demo_run.run, device="cpu")

    embedded = model.embed_images([hospital_folder])
    expected = model.embed_images([_levels(1).astype(np.uint8), 255 - _levels(2).astype(np.uint8)])

    assert [Path(name).name for name in embedded.names] == ["a-16bit.png", "b-monochrome1.dcm"]
    assert [Path(item.name).name for item in embedded.unreadable] == ["c-broken.png"]
    np.testing.assert_array_equal(embedded.embeddings, expected.embeddings)
    np.testing.assert_allclose(np.linalg.norm(embedded.embeddings, axis=1), 1.0, rtol=1e-5)


def test_one_path_is_one_input_and_a_missing_file_is_listed(tmp_path):
    Image.fromarray(_levels(5).astype(np.uint8)).save(tmp_path / "one.png")

    single = collect_images(str(tmp_path / "one.png"))
    missing = list(decode_images(collect_images([tmp_path / "gone.dcm"]), DecodeSize(None)))

    assert [image.name for image in single] == [str(tmp_path / "one.png")]
    assert isinstance(missing[0], Unreadable) and missing[0].reason == "file not found"
