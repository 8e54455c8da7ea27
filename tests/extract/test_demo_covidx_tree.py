"""The demo COVIDx tree: the COVID-Net layout with 3 classes one can tell apart, planted faults, same bytes."""
import numpy as np
import pytest

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets import read_covidx
from adaptor_vlp.extract.datasets.covidx import DUPLICATE_FILE_NAME, THREE_CLASSES
from adaptor_vlp.extract.demo.covidx_tree import MIN_IMAGES, write_demo_covidx
from adaptor_vlp.extract.images import read_grayscale
from tests.extract.conftest import tree_bytes

IMAGES = 90
SEED = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("covidx-demo") / "covidx"
    return root, write_demo_covidx(root, images=IMAGES, seed=SEED)


def test_tree_is_in_the_covid_net_layout_and_reads_back(demo):
    root, summary = demo
    manifest = read_covidx(root)
    assert manifest.label_names == THREE_CLASSES
    assert manifest.exclusions == {DUPLICATE_FILE_NAME: 1, "image file missing": 1}
    assert len(manifest.rows) == IMAGES - 1
    assert {path.suffix for path in (root / "train").iterdir()} == {".png", ".jpg"}
    test_patients = {row.subject_id for row in manifest.rows if row.split is Split.TEST}
    assert test_patients and test_patients.isdisjoint(row.subject_id for row in manifest.rows
                                                      if row.split is not Split.TEST)
    assert all(count > 0 for count in summary.images_per_class.values())
    assert "file name listed twice" in "\n".join(summary.lines())


def test_the_classes_show_what_they_are(demo):
    """Pneumonia whitens one lower zone, COVID-19 both, a normal film neither."""
    root, _ = demo
    zones: dict[str, list[tuple[float, float]]] = {name: [] for name in THREE_CLASSES}
    for row in read_covidx(root).rows:
        pixels = read_grayscale(root / row.image_path).astype(float)
        height, width = pixels.shape
        band = pixels[int(0.55 * height):int(0.72 * height)]
        left = band[:, int(0.15 * width):int(0.4 * width)].mean()
        right = band[:, int(0.6 * width):int(0.85 * width)].mean()
        zones[next(name for name, value in row.labels.items() if value == 1.0)].append((min(left, right),
                                                                                        max(left, right)))
    normal, pneumonia, covid = (np.mean(zones[name], axis=0) for name in THREE_CLASSES)
    assert pneumonia[1] > normal[1] + 30 and pneumonia[0] < normal[0] + 20
    assert covid[0] > normal[0] + 30 and covid[0] > pneumonia[0] + 30


def test_same_seed_same_bytes_and_refusals(demo, tmp_path):
    root, _ = demo
    write_demo_covidx(tmp_path / "again", images=IMAGES, seed=SEED)
    assert tree_bytes(tmp_path / "again") == tree_bytes(root)
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_covidx(root, images=IMAGES)
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGES} images"):
        write_demo_covidx(tmp_path / "small", images=MIN_IMAGES - 1)
