"""Augmented views: each view store is checked against the plain one, and its masks are warped as its images."""
import json
import shutil

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ProvenanceMismatch, StoreError
from adaptor_vlp.cache_schema.warps import draw_warp, view_seed, view_store_path, warp_mask
from adaptor_vlp.evaluate.features import open_dataset_rows
from adaptor_vlp.evaluate.results import RunContext
from adaptor_vlp.evaluate.segment import SegmentSettings, aligned_masks, run_segmentation
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, SegmentationProtocol
from adaptor_vlp.evaluate.segmentation_views import open_view_rows, warped_masks
from tests.evaluate.conftest import DATASET, IMAGE_PREPROCESSING, VISION, build_toy_dataset


def add_view_store(cache, view, **preprocessing_overrides):
    """A copy of the plain store recorded as view `view` (its tokens unwarped: enough for the checks here)."""
    plain = view_store_path(cache, DATASET, VISION, 1).parent / f"{VISION}.zarr"
    path = view_store_path(cache, DATASET, VISION, view)
    shutil.copytree(plain, path)
    metadata = path / "zarr.json"
    document = json.loads(metadata.read_text())
    preprocessing = document["attributes"]["adaptor_vlp"]["provenance"]["preprocessing"]
    preprocessing.update({"segmentation_view": {"index": view}, **preprocessing_overrides})
    metadata.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def with_views(tmp_path_factory):
    toy = build_toy_dataset(tmp_path_factory.mktemp("views") / "cache", with_text=False)
    add_view_store(toy.cache_dir, 1)
    add_view_store(toy.cache_dir, 2)
    return toy


def test_masks_of_a_view_are_warped_by_the_warp_of_its_images(with_views):
    rows = open_dataset_rows(with_views.cache_dir, DATASET, VISION)
    positions = np.flatnonzero(rows.mask_targets != "")[:40]
    masks = aligned_masks(rows, positions, IMAGE_PREPROCESSING["image_size"])
    warped = warped_masks(masks, rows.ids[positions], 2)
    for mask, sample_id, result in zip(masks, rows.ids[positions], warped):
        np.testing.assert_array_equal(result, warp_mask(mask, draw_warp(view_seed(str(sample_id), 2))))
    assert any(draw_warp(view_seed(str(sample_id), 2)).applied and mask.any() and not np.array_equal(mask, result)
               for mask, sample_id, result in zip(masks, rows.ids[positions], warped))


@pytest.mark.slow
def test_the_decoder_trains_on_the_views_and_records_them(with_views):
    rows = open_dataset_rows(with_views.cache_dir, DATASET, VISION)
    protocol = SegmentationProtocol(decoder=DecoderName.LIGHT, batch_size=16, max_epochs=4, views=2, image_size=32)
    [run] = run_segmentation(rows, RunContext(DATASET, {"image": {}}, None),
                             SegmentSettings(fractions=(100.0,), n_resamples=10, recipe=protocol))
    assert run.record.details["recipe"]["views"] == 2
    assert len(open_view_rows(rows, 2)) == 2


def test_missing_or_mismatched_view_stores_are_refused_naming_them(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    with pytest.raises(StoreError, match=r"view1.zarr does not exist.*--segmentation-views 1"):
        open_view_rows(rows, 1)
    add_view_store(toy.cache_dir, 1, image_size=64)
    with pytest.raises(ProvenanceMismatch, match="other than the view"):
        open_view_rows(rows, 1)
    shutil.rmtree(view_store_path(toy.cache_dir, DATASET, VISION, 1))
    add_view_store(toy.cache_dir, 1, segmentation_view={"index": 2})
    with pytest.raises(ProvenanceMismatch, match="segmentation_view.index"):
        open_view_rows(rows, 1)
