"""The demo SIIM-ACR tree: real layout, deterministic bytes, masks where the drawn pleural air is, one planted fault."""
import csv

import pytest

from adaptor_vlp.cache_schema.targets import decode_mask
from adaptor_vlp.extract.datasets import read_siim
from adaptor_vlp.extract.demo.siim_tree import MIN_IMAGES, write_demo_siim
from adaptor_vlp.extract.images import read_grayscale
from tests.extract.conftest import tree_bytes

IMAGES = 16
SEED = 1


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("siim-demo") / "siim"
    return root, write_demo_siim(root, images=IMAGES, seed=SEED)


def test_tree_is_in_the_kaggle_layout_and_reads_back(demo):
    root, summary = demo
    with (root / "train-rle.csv").open(newline="") as stream:
        table = list(csv.reader(stream))
    assert table[0] == ["ImageId", " EncodedPixels"]
    assert len(table) - 1 == summary.images_listed + summary.bilateral_images  # a bilateral image has two rows
    assert summary.bilateral_images >= 1 and summary.positive_images >= 3
    assert len(list((root / "dicom-images-train").glob("*/*/*.dcm"))) == summary.images_written == IMAGES - 1
    manifest = read_siim(root)
    assert len(manifest.rows) == IMAGES - 1
    assert manifest.exclusions == {"image file missing": 1}
    assert summary.missing_image.endswith(".dcm") and not (root / summary.missing_image).exists()
    assert len({row.subject_id for row in manifest.rows}) < len(manifest.rows)  # some patients have two images
    assert "planted faults:" in summary.lines()


def test_masks_agree_with_labels_and_lie_on_the_dark_pleural_air(demo):
    root, _ = demo
    for row in read_siim(root).rows:
        mask = decode_mask(row.mask)
        assert mask.any() == (row.labels["Pneumothorax"] == 1.0)
        if mask.any():
            pixels = read_grayscale(root / row.image_path)
            assert pixels.shape == mask.shape
            assert pixels[mask].mean() < 0.6 * pixels.mean()


def test_same_seed_same_bytes_other_seed_other_images(demo, tmp_path):
    root, _ = demo
    write_demo_siim(tmp_path / "again", images=IMAGES, seed=SEED)
    assert tree_bytes(tmp_path / "again") == tree_bytes(root)
    write_demo_siim(tmp_path / "other", images=MIN_IMAGES, seed=SEED + 1)
    assert (tmp_path / "other" / "train-rle.csv").read_bytes() != (root / "train-rle.csv").read_bytes()


def test_refuses_a_used_folder_and_too_few_images(demo, tmp_path):
    root, _ = demo
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_siim(root, images=IMAGES)
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGES} images"):
        write_demo_siim(tmp_path / "small", images=MIN_IMAGES - 1)
