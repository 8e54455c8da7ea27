"""The demo RSNA Pneumonia tree: the Kaggle layout, boxes where the drawn opacity is, one planted fault, same bytes."""
import csv

import pytest

from adaptor_vlp.cache_schema.targets import decode_mask
from adaptor_vlp.extract.datasets import read_rsna
from adaptor_vlp.extract.demo.rsna_tree import MIN_IMAGES, write_demo_rsna
from adaptor_vlp.extract.images import read_grayscale
from tests.extract.conftest import tree_bytes

IMAGES = 30
SEED = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna-demo") / "rsna"
    return root, write_demo_rsna(root, images=IMAGES, seed=SEED)


def test_tree_is_in_the_kaggle_layout_and_reads_back(demo):
    root, summary = demo
    with (root / "stage_2_train_labels.csv").open(newline="") as stream:
        table = list(csv.reader(stream))
    assert table[0] == ["patientId", "x", "y", "width", "height", "Target"]
    assert len(table) - 1 == summary.images_listed - summary.positive_images + summary.boxes
    assert all(row[1:5] == ["", "", "", ""] for row in table[1:] if row[5] == "0")
    assert summary.boxes > summary.positive_images >= 3  # some pneumonias are bilateral: two boxes
    manifest = read_rsna(root)
    assert len(manifest.rows) == IMAGES - 1 and manifest.exclusions == {"image file missing": 1}
    assert not (root / summary.missing_image).exists() and "planted faults:" in summary.lines()
    assert {row.view for row in manifest.rows} == {"AP", "PA"}


def test_boxes_agree_with_labels_and_cover_the_bright_opacity(demo):
    root, _ = demo
    ratios = []
    for row in read_rsna(root).rows:
        mask = decode_mask(row.mask)
        assert mask.any() == (row.labels["Pneumonia"] == 1.0)
        if mask.any():
            pixels = read_grayscale(root / row.image_path)
            assert pixels.shape == mask.shape
            ratios.append(pixels[mask].mean() / pixels.mean())
    assert min(ratios) > 1.0 and sum(ratios) / len(ratios) > 1.25


def test_same_seed_same_bytes_and_refusals(demo, tmp_path):
    root, _ = demo
    write_demo_rsna(tmp_path / "again", images=IMAGES, seed=SEED)
    assert tree_bytes(tmp_path / "again") == tree_bytes(root)
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_rsna(root, images=IMAGES)
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGES} images"):
        write_demo_rsna(tmp_path / "small", images=MIN_IMAGES - 1)
