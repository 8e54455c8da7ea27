"""Masks line up with the token grid as the images did; a decoder on toy patch tokens, raw or through the
Adaptor's image path, segments well."""
from dataclasses import replace

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName
from adaptor_vlp.cache_schema.targets import encode_rle_target
from adaptor_vlp.evaluate.features import DatasetRows, adaptor_token_embeddings, open_adaptor_run, open_dataset_rows
from adaptor_vlp.evaluate.results import FeatureSpace, RunContext
from adaptor_vlp.evaluate.segment import SegmentationError, SegmentSettings, aligned_masks, run_segmentation, token_grid
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, SegmentationProtocol
from tests.evaluate.conftest import DATASET, GRID, IMAGE_PREPROCESSING, VISION, build_toy_dataset

DICE_FLOOR = 0.6
TOY_PROTOCOL = SegmentationProtocol(decoder=DecoderName.LIGHT, batch_size=16, learning_rate=1e-3, max_epochs=30,
                                    image_size=IMAGE_PREPROCESSING["image_size"])
"""The light decoder (the published one is tested in test_segmentation_head), the published loss and selection."""
"""Dice over positive test images that a decoder trained on every toy training mask must reach."""


@pytest.fixture(scope="module")
def segmented(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    settings = SegmentSettings(fractions=(0.5, 100.0), seed=2, n_resamples=50, recipe=TOY_PROTOCOL)
    return rows, run_segmentation(rows, RunContext(DATASET, {"image": {}}, None), settings)


@pytest.mark.slow
def test_a_decoder_on_patch_tokens_segments_the_positive_images(segmented):
    _, runs = segmented
    record = runs[-1].record
    assert record.data_pct == 100.0
    assert record.metrics["dice_positive"].point >= DICE_FLOOR
    assert record.details["n_test_positive"] > 0
    assert set(record.metrics) == {"dice_all", "iou_all", "dice_positive", "iou_positive",
                                   "empty_gt_false_positive_rate", "dice_published"}
    for interval in record.metrics.values():
        assert interval.low <= interval.point <= interval.high
    assert 0 < record.details["dice_published_predicting_nothing"] < 1


@pytest.mark.slow
def test_the_decoder_learns_from_tokens_through_the_adaptor_too(toy, toy_run):
    run = open_adaptor_run(toy_run)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, run)
    settings = SegmentSettings(fractions=(100.0,), seed=2, n_resamples=20, recipe=TOY_PROTOCOL)
    [evaluated] = run_segmentation(rows, RunContext(DATASET, {"image": {}}, run.reference()), settings, run)
    record = evaluated.record
    assert record.feature_space is FeatureSpace.ADAPTOR and record.name == "segment-adaptor-decoder-100pct-seed2"
    assert record.metrics["dice_positive"].point >= DICE_FLOOR


def test_a_patch_embedding_does_not_depend_on_the_other_images_in_its_batch(toy, toy_run):
    """Image 0's per-token Adaptor embeddings are the same alone, beside images 1-2, and beside images 3-9."""
    run = open_adaptor_run(toy_run)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, run)
    tokens = rows.store.read(ArrayName.TOKENS, rows.rows[:10])
    mask = rows.store.read(ArrayName.TOKEN_MASK, rows.rows[:10])
    mask[5, 3:] = False  # a batch-mate with padded tokens changes nothing either
    alone = adaptor_token_embeddings(run, tokens[:1], mask[:1])
    for others in (slice(1, 3), slice(3, 10)):
        batch = np.concatenate([tokens[:1], tokens[others]]), np.concatenate([mask[:1], mask[others]])
        np.testing.assert_allclose(adaptor_token_embeddings(run, *batch)[0], alone[0], atol=2e-3)
    assert not np.allclose(adaptor_token_embeddings(run, tokens[1:2], mask[1:2])[0], alone[0], atol=2e-3)
    assert alone.shape == (1, GRID * GRID, run.loaded.model.config.projection_dim)


def test_overlays_keep_a_few_test_masks_positives_first(segmented):
    _, runs = segmented
    arrays = runs[-1].arrays
    truth, predicted = arrays["overlay_truth"], arrays["overlay_predicted"]
    side = 4 * GRID  # the light decoder's own output size; the published decoder's masks are at the image size
    assert truth.shape == predicted.shape and truth.shape[1:] == (side, side)
    assert 0 < len(truth) <= SegmentSettings().n_overlays
    assert truth[0].any()


def test_a_subset_too_small_to_train_on_is_skipped_with_the_reason(segmented):
    rows, runs = segmented
    half_percent = runs[0].record
    with_masks = np.intersect1d(rows.positions("train"), np.flatnonzero(rows.mask_targets != ""))
    assert half_percent.subset["n_available"] == len(with_masks)
    assert half_percent.subset["n_chosen"] == 1
    assert "at least 2" in half_percent.skipped
    assert half_percent.metrics == {}


SHORTER_SIDE_CROP = [{"op": "resize_shortest", "size": 32, "interpolation": "bicubic"},
                     {"op": "center_crop", "size": 32}]
SQUASH = [{"op": "resize", "size": 32, "interpolation": "bicubic"}]
PAPER = [{"op": "resize_longest", "size": 32, "interpolation": "area"}, {"op": "pad_square"},
         {"op": "center_crop", "size": 28}]


@pytest.mark.parametrize("geometry, expected_rows, expected_columns", [
    (SHORTER_SIDE_CROP, slice(0, 8), slice(0, 8)), (SQUASH, slice(0, 8), slice(2, 6)),
    (PAPER, slice(2, 6), slice(2, 6)),
])
def test_masks_are_cropped_and_resized_as_the_images_were(tmp_path, geometry, expected_rows, expected_columns):
    """A 4x8 mask lit in columns 2-5: the centre crop keeps exactly those columns; squashing keeps them narrow;
    the paper's longest-side fit pads rows above and below (the crop to 28 of 32 keeps a 2-pixel margin)."""
    preprocessing = {**IMAGE_PREPROCESSING, "geometry": geometry}
    toy = build_toy_dataset(tmp_path / "cache", with_text=False, preprocessing=preprocessing)
    wide = np.zeros((4, 8), dtype=bool)
    wide[:, 2:6] = True
    rows = _with_first_target(open_dataset_rows(toy.cache_dir, DATASET, VISION), encode_rle_target(wide))

    [mask] = aligned_masks(rows, np.array([0]), 8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[expected_rows, expected_columns] = True
    np.testing.assert_array_equal(mask, expected)


def test_a_store_without_patch_tokens_is_refused_naming_the_option(tmp_path):
    toy = build_toy_dataset(tmp_path / "cache", with_text=False, with_tokens=False)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    with pytest.raises(SegmentationError, match="--tokens"):
        token_grid(rows)


def test_a_dataset_without_mask_targets_is_refused(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    unmasked = replace(rows, mask_targets=np.full(len(rows), "", dtype=object))
    with pytest.raises(SegmentationError, match="no mask targets"):
        run_segmentation(unmasked, RunContext(DATASET, {}, None), SegmentSettings(n_resamples=5))


def _with_first_target(rows: DatasetRows, target: str) -> DatasetRows:
    targets = rows.mask_targets.copy()
    targets[0] = target
    return replace(rows, mask_targets=targets)
