"""Decoding radiographs: JPEG draft decoding, PNG, DICOM windowing, HDF5 rows, and clear failures."""
import pickle

import h5py
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from adaptor_vlp.extract.images import HDF5ImageSource, UnreadableImage, read_decoded, read_grayscale

CHEST_CR = "RG1_UNCI.dcm"  # a real chest radiograph (CR, MONOCHROME1, 15-bit, with a window)


def smooth_radiograph_like(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth synthetic image with broad structures, like a radiograph at low frequency."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    image = 120 + 60 * np.sin(3 * rows) * np.cos(2 * cols)
    for _ in range(6):
        centre_row, centre_col, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        image += 50 * np.exp(-((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / radius**2)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("jpeg") / "large.jpg"
    Image.fromarray(smooth_radiograph_like(3000, 2500, seed=0)).save(path, quality=95)
    return path


def test_real_chest_dicom_is_windowed_inverted_and_uses_the_8_bit_range():
    path = get_testdata_file(CHEST_CR)
    gray = read_grayscale(path)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)

    assert gray.dtype == np.uint8 and gray.shape == stored.shape == (1955, 1841)
    assert gray.min() == 0 and gray.max() == 255
    assert gray.std() > 20
    # MONOCHROME1 stores bright tissue as low values: the decoded image must be inverted.
    assert np.corrcoef(gray.ravel(), stored.ravel())[0, 1] < -0.9
    height, width = gray.shape
    band = slice(int(0.3 * height), int(0.5 * height))
    right_lung = gray[band, int(0.2 * width) : int(0.3 * width)]
    left_lung = gray[band, int(0.7 * width) : int(0.8 * width)]
    lungs = np.concatenate([right_lung.ravel(), left_lung.ravel()])
    mediastinum = gray[band, int(0.47 * width) : int(0.53 * width)]
    assert lungs.mean() + 40 < mediastinum.mean()


def test_target_size_resizes_the_shorter_side_keeping_the_aspect_ratio():
    gray = read_grayscale(get_testdata_file(CHEST_CR), target_size=256)

    assert gray.shape == (272, 256)


def test_a_reduced_decode_keeps_the_full_resolution_frame_it_stands_for(large_jpeg):
    decoded = read_decoded(large_jpeg, target_size=256)
    assert decoded.gray.shape == (307, 256) and decoded.frame == (3000, 2500)
    assert read_decoded(large_jpeg).frame == read_decoded(large_jpeg).gray.shape == (3000, 2500)
    assert read_decoded(get_testdata_file(CHEST_CR), target_size=256).frame == (1955, 1841)


def test_jpeg_draft_decoding_matches_full_decode_then_resize(large_jpeg):
    reduced = read_grayscale(large_jpeg, target_size=256)
    with Image.open(large_jpeg) as image:
        full = np.asarray(image.convert("L").resize((256, 307), Image.Resampling.BICUBIC), dtype=np.float64)

    assert reduced.shape == (307, 256) and reduced.dtype == np.uint8
    assert np.abs(reduced - full).mean() < 2.0


def test_full_resolution_jpeg_when_no_target_size(large_jpeg):
    assert read_grayscale(large_jpeg).shape == (3000, 2500)


def test_sixteen_bit_png_is_stretched_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(1000, 40000, 64), (32, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(path)

    gray = read_grayscale(path)

    assert gray.dtype == np.uint8 and gray[0, 0] == 0 and gray[0, -1] == 255
    assert np.all(np.diff(gray[0].astype(int)) >= 0)


def test_truncated_jpeg_raises_with_the_reason(large_jpeg, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(large_jpeg.read_bytes()[:20_000])

    with pytest.raises(UnreadableImage, match="truncated") as raised:
        read_grayscale(truncated, target_size=128)
    assert raised.value.path == truncated


@pytest.mark.parametrize("name", ["garbage.png", "garbage.dcm"])
def test_corrupt_file_raises(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 20)

    with pytest.raises(UnreadableImage) as raised:
        read_grayscale(path, target_size=64)
    assert raised.value.reason


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(UnreadableImage) as raised:
        read_grayscale(tmp_path / "absent.jpg", target_size=64)
    assert raised.value.reason == "file not found"


@pytest.fixture
def chexzero_h5(tmp_path):
    images = np.random.default_rng(1).uniform(0, 255, size=(3, 320, 320)).astype(np.float32)
    path = tmp_path / "cxr.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("cxr", data=images)
    return path, images


def test_hdf5_source_reads_rows_in_order(chexzero_h5):
    path, images = chexzero_h5
    with HDF5ImageSource(path) as source:
        assert len(source) == 3
        for index in range(3):
            row = source.read(index)
            assert row.dtype == np.uint8 and row.shape == (320, 320)
            np.testing.assert_array_equal(row, np.rint(images[index]).astype(np.uint8))
        with pytest.raises(IndexError, match="out of range"):
            source.read(3)


def test_hdf5_source_survives_pickling_for_worker_processes(chexzero_h5):
    path, images = chexzero_h5
    source = HDF5ImageSource(path)
    source.read(0)

    copy = pickle.loads(pickle.dumps(source))

    np.testing.assert_array_equal(copy.read(2), np.rint(images[2]).astype(np.uint8))
    source.close()
    copy.close()


def test_hdf5_without_cxr_dataset_is_unreadable(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("images", data=np.zeros((2, 8, 8)))

    with pytest.raises(UnreadableImage, match="'cxr'"):
        HDF5ImageSource(path)


def test_hdf5_row_with_non_finite_pixels_is_unreadable(tmp_path):
    path = tmp_path / "nan.h5"
    images = np.zeros((2, 8, 8), dtype=np.float32)
    images[1, 3, 3] = np.nan
    with h5py.File(path, "w") as file:
        file.create_dataset("cxr", data=images)

    with HDF5ImageSource(path) as source:
        source.read(0)
        with pytest.raises(UnreadableImage, match="row 1"):
            source.read(1)
