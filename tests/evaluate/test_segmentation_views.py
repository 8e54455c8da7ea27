"""Augmented views: each view store is checked against the segmentation store, and its masks are warped as its
images."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ProvenanceMismatch, StoreError, segmentation_store_path, store_path
from adaptor_vlp.cache_schema.warps import draw_warp, view_seed, warp_mask
from adaptor_vlp.cli import app
from adaptor_vlp.evaluate.features import open_dataset_rows
from adaptor_vlp.evaluate.results import RunContext
from adaptor_vlp.evaluate.segment import SegmentSettings, aligned_masks, run_segmentation
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, SegmentationProtocol
from adaptor_vlp.evaluate.segmentation_views import open_view_rows, warped_masks
from tests.evaluate.conftest import DATASET, IMAGE_PREPROCESSING, VISION, build_toy_dataset

SIZE = IMAGE_PREPROCESSING["image_size"]


def add_store(cache, view=0, **preprocessing_overrides):
    """A copy of the plain store as the segmentation store of its size (view 0) or as view `view` of it (its tokens
    unwarped: enough for the checks here)."""
    path = segmentation_store_path(cache, DATASET, VISION, SIZE, view)
    shutil.copytree(store_path(cache, DATASET, "image", VISION), path)
    metadata = path / "zarr.json"
    document = json.loads(metadata.read_text())
    preprocessing = document["attributes"]["adaptor_vlp"]["provenance"]["preprocessing"]
    preprocessing.update({"segmentation_view": {"index": view}} if view else {}, **preprocessing_overrides)
    metadata.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def with_views(tmp_path_factory):
    toy = build_toy_dataset(tmp_path_factory.mktemp("views") / "cache", with_text=False)
    for view in (0, 1, 2):
        add_store(toy.cache_dir, view)
    return toy


def test_masks_of_a_view_are_warped_by_the_warp_of_its_images(with_views):
    rows = open_dataset_rows(with_views.cache_dir, DATASET, VISION, segmentation_size=SIZE)
    positions = np.flatnonzero(rows.mask_targets != "")[:40]
    masks = aligned_masks(rows, positions, IMAGE_PREPROCESSING["image_size"])
    warped = warped_masks(masks, rows.ids[positions], 2)
    for mask, sample_id, result in zip(masks, rows.ids[positions], warped):
        np.testing.assert_array_equal(result, warp_mask(mask, draw_warp(view_seed(str(sample_id), 2))))
    assert any(draw_warp(view_seed(str(sample_id), 2)).applied and mask.any() and not np.array_equal(mask, result)
               for mask, sample_id, result in zip(masks, rows.ids[positions], warped))


@pytest.mark.slow
def test_the_decoder_trains_on_the_views_and_records_them(with_views):
    rows = open_dataset_rows(with_views.cache_dir, DATASET, VISION, segmentation_size=SIZE)
    protocol = SegmentationProtocol(decoder=DecoderName.LIGHT, batch_size=16, max_epochs=4, views=2, image_size=SIZE)
    [run] = run_segmentation(rows, RunContext(DATASET, {"image": {}}, None),
                             SegmentSettings(fractions=(100.0,), n_resamples=10, recipe=protocol))
    assert run.record.details["recipe"]["views"] == 2
    assert len(open_view_rows(rows, 2)) == 2


def test_missing_or_mismatched_view_stores_are_refused_naming_them(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False)
    add_store(toy.cache_dir)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, segmentation_size=SIZE)
    with pytest.raises(StoreError, match=rf"seg{SIZE}.view1.zarr does not exist.*--segmentation-views 1"):
        open_view_rows(rows, 1)
    add_store(toy.cache_dir, 1, geometry=[])
    with pytest.raises(ProvenanceMismatch, match="other than the view"):
        open_view_rows(rows, 1)
    shutil.rmtree(segmentation_store_path(toy.cache_dir, DATASET, VISION, SIZE, 1))
    add_store(toy.cache_dir, 1, segmentation_view={"index": 2})
    with pytest.raises(ProvenanceMismatch, match="segmentation_view.index"):
        open_view_rows(rows, 1)


def test_views_are_refused_for_a_store_in_the_backbone_frame(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    assert open_view_rows(rows, 0) == []
    with pytest.raises(StoreError, match="not a segmentation store.*--segmentation-size S --segmentation-views K"):
        open_view_rows(rows, 1)


def test_a_segmentation_store_recording_another_size_is_refused_naming_the_field(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False)
    with pytest.raises(StoreError, match=rf"seg{SIZE}.zarr does not exist.*--segmentation-size {SIZE}"):
        open_dataset_rows(toy.cache_dir, DATASET, VISION, segmentation_size=SIZE)
    add_store(toy.cache_dir, image_size=2 * SIZE)
    with pytest.raises(ProvenanceMismatch, match="preprocessing.image_size"):
        open_dataset_rows(toy.cache_dir, DATASET, VISION, segmentation_size=SIZE)


def test_the_segment_command_reads_the_segmentation_store_and_its_views(with_views, tmp_path):
    common = ["evaluate", "segment", "--cache", str(with_views.cache_dir), "--dataset", DATASET, "--vision", VISION,
              "--fractions", "100", "--epochs", "3", "--decoder", "light", "--resamples", "10",
              "--out", str(tmp_path / "results")]
    refused = CliRunner().invoke(app, [*common, "--segmentation-views", "2"])
    assert refused.exit_code == 2 and "give --segmentation-size too" in refused.output
    no_maps = CliRunner().invoke(app, [*common, "--segmentation-size", str(SIZE), "--unet", "8"])
    assert no_maps.exit_code == 2
    assert f"--segmentation-size {SIZE} --feature-maps --overwrite" in no_maps.output.replace("\n", "")
    done = CliRunner().invoke(app, [*common, "--segmentation-size", str(SIZE), "--segmentation-views", "2"])
    assert done.exit_code == 0, done.output
    [result] = (tmp_path / "results").rglob("*.json")
    recipe = json.loads(result.read_text())["details"]["recipe"]
    assert (recipe["image_size"], recipe["views"]) == (SIZE, 2)
