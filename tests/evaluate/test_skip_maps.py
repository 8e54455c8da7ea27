"""The U-Net's inputs read from a store with feature maps, batch by batch, and a U-Net trained on them."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance, dataset_dir, store_path
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from adaptor_vlp.cache_schema.manifest import manifest_sha256
from adaptor_vlp.cache_schema.targets import decode_mask
from adaptor_vlp.cli import app
from adaptor_vlp.evaluate.early_stopping import TrainingSettings, predict_in_batches, train_with_early_stopping
from adaptor_vlp.evaluate.features import open_dataset_rows
from adaptor_vlp.evaluate.results import FeatureSpace, RunContext
from adaptor_vlp.evaluate.segment import SegmentSettings, run_segmentation
from adaptor_vlp.evaluate.segmentation_protocol import LossName, SegmentationProtocol
from adaptor_vlp.evaluate.skip_maps import (
    MissingFeatureMaps,
    SkipMapRows,
    UNetSegmenter,
    fit_unet_segmenter,
    unet_geometry,
)
from tests.evaluate.conftest import DATASET, IMAGE_DIM, IMAGE_PREPROCESSING, VISION

SIZE = 32
LEVELS = ((4, 16, 16), (8, 8, 8), (8, 4, 4), (16, 2, 2))
N = 12


def _provenance() -> Provenance:
    return Provenance(dataset="demo", manifest_sha256="a" * 64, modality=Modality.IMAGE, backbone="tiny-cnn",
                      weights_id="random-init:seed=0", weights_sha256="b" * 64,
                      preprocessing={"image_size": SIZE}, pooling="mean")


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    rng = np.random.default_rng(0)
    store = CacheStore.create(tmp_path / "maps.zarr", _provenance(), [f"{i:04d}" for i in range(N)],
                              [str(i) for i in range(N)], ["train"] * N, FeatureShape(8, feature_maps=LEVELS),
                              shard_rows=5)
    for span in store.shards():
        n = span.stop - span.start
        arrays = {ArrayName.EMBEDDING: rng.standard_normal((n, 8))}
        arrays.update({name: rng.standard_normal((n, *level)) for name, level in zip(FEATURE_MAP_ARRAYS, LEVELS)})
        store.write_shard(span.index, arrays)
    return store


def _rows(store: CacheStore) -> SkipMapRows:
    return SkipMapRows(store, np.arange(N), torch.from_numpy(store.read(ArrayName.EMBEDDING).astype(np.float32)))


def test_a_batch_reads_the_maps_of_its_own_rows(store: CacheStore) -> None:
    rows = _rows(store)
    batch = rows[torch.tensor([7, 2, 11])]
    assert len(batch) == 3 and batch.store_rows.tolist() == [7, 2, 11]
    torch.testing.assert_close(batch.pooled, rows.pooled[[7, 2, 11]])
    for got, name in zip(batch.maps(), FEATURE_MAP_ARRAYS):
        np.testing.assert_array_equal(got.numpy(), store.read(name)[[7, 2, 11]])
    assert [len(part) for part in rows.split(5)] == [5, 5, 2]
    held = rows[torch.tensor([9, 1, 4, 10])].in_memory()
    for got, name in zip(held[torch.tensor([2, 0])].maps(), FEATURE_MAP_ARRAYS):
        np.testing.assert_array_equal(got.numpy(), store.read(name)[[4, 9]])


def test_the_geometry_comes_from_the_store(store: CacheStore) -> None:
    geometry = unet_geometry(store, embedding_dim=8)
    assert geometry.skip_channels == (4, 8, 8, 16) and geometry.input_size == SIZE


def test_a_store_without_maps_is_refused_saying_how_to_extract_them(tmp_path: Path) -> None:
    plain = CacheStore.create(tmp_path / "plain.zarr", _provenance(), ["a", "b"], ["1", "2"], ["train", "test"],
                              FeatureShape(8))
    with pytest.raises(MissingFeatureMaps, match="--backbone tiny-cnn --dataset demo --feature-maps"):
        unet_geometry(plain, 8)


@pytest.mark.slow
def test_the_unet_learns_a_mask_written_in_its_finest_skip_map(store: CacheStore) -> None:
    rows = _rows(store)
    finest = torch.from_numpy(store.read(ArrayName.FEATURE_MAP_1).astype(np.float32))
    masks = (functional.interpolate(finest[:, :1], scale_factor=2, mode="nearest")[:, 0] > 0)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.binary_cross_entropy_with_logits(logits, target.float())

    torch.manual_seed(0)
    segmenter = UNetSegmenter(unet_geometry(store, embedding_dim=8))
    before = float(loss(predict_in_batches(segmenter, rows, 4), masks))
    settings = TrainingSettings(learning_rate=1e-3, weight_decay=0.0, batch_size=4, max_epochs=8, patience=8)
    train_with_early_stopping(segmenter, loss, train=(rows, masks), val=(rows, masks), settings=settings, seed=0)
    predicted = predict_in_batches(segmenter, rows, 4)
    assert predicted.shape == (N, SIZE, SIZE)
    assert float(loss(predicted, masks)) < 0.7 * before


def test_the_unet_trains_on_one_view_per_epoch_and_validates_on_the_protocols_schedule(store: CacheStore) -> None:
    rows = _rows(store)
    finest = torch.from_numpy(store.read(ArrayName.FEATURE_MAP_1).astype(np.float32))
    masks = (functional.interpolate(finest[:, :1], scale_factor=2, mode="nearest")[:, 0] > 0).numpy()
    protocol = SegmentationProtocol(batch_size=4, max_epochs=6, views=2)
    geometry = unet_geometry(store, embedding_dim=8)
    fitted = fit_unet_segmenter([rows, rows], [masks, masks[:, ::-1]], rows, masks, geometry, SIZE, 0, protocol)
    assert fitted.training.validated_epochs == (3, 6) and fitted.training.epochs_run == 6
    assert fitted.predict_masks(rows).shape == (N, SIZE, SIZE)
    with pytest.raises(ValueError, match="one mask tensor per view"):
        fit_unet_segmenter([rows, rows], [masks], rows, masks, geometry, SIZE, 0, protocol)


CNN = "toy-cnn"


def _toy_maps_store(toy) -> None:
    """A store of the toy dataset's images whose finest map shows each image's mask; pooled as the toy ViT's."""
    rows = toy.manifest.rows
    rng = np.random.default_rng(3)
    masks = np.stack([decode_mask(row.mask) for row in rows]).astype(np.float32)  # (N, 32, 32)
    finest = masks.reshape(len(rows), 16, 2, 16, 2).mean(axis=(2, 4))
    arrays = {ArrayName.EMBEDDING: toy.image_store.read_by_ids(ArrayName.EMBEDDING, [r.dicom_id for r in rows])}
    for name, (channels, side, _) in zip(FEATURE_MAP_ARRAYS, LEVELS):
        level = 0.3 * rng.standard_normal((len(rows), channels, side, side))
        if side == 16:
            level[:, 0] += 2 * finest
        arrays[name] = level
    arrays[ArrayName.EMBEDDING] = np.nan_to_num(arrays[ArrayName.EMBEDDING])
    preprocessing = {**IMAGE_PREPROCESSING, "tokens": False}
    provenance = Provenance(dataset=DATASET, manifest_sha256=manifest_sha256(dataset_dir(toy.cache_dir, DATASET)),
                            modality=Modality.IMAGE, backbone=CNN, weights_id="toy-cnn:random",
                            weights_sha256="c" * 64, preprocessing=preprocessing, pooling="mean")
    path = store_path(toy.cache_dir, DATASET, Modality.IMAGE, CNN)
    if path.exists():
        return
    store = CacheStore.create(path, provenance, [r.dicom_id for r in rows], [r.study_id for r in rows],
                              [r.split.value for r in rows], FeatureShape(IMAGE_DIM, feature_maps=LEVELS),
                              shard_rows=64)
    for span in store.shards():
        store.write_shard(span.index, {name: values[span.rows] for name, values in arrays.items()})


@pytest.mark.slow
def test_segmentation_with_the_unet_reads_the_maps_and_segments(toy) -> None:
    _toy_maps_store(toy)
    rows = open_dataset_rows(toy.cache_dir, DATASET, CNN)
    # The recipe this test was written for (Dice + BCE, AdamW 1e-3, batch 16, patience 5), as a protocol.
    recipe = SegmentationProtocol(loss=LossName.DICE_BCE, learning_rate=1e-3, weight_decay=0.01, batch_size=16,
                                  patience_epochs=5, max_epochs=15, validation_interval=1)
    settings = SegmentSettings(fractions=(100.0,), seed=1, n_resamples=20, recipe=recipe, unet_width_divisor=8)
    [run] = run_segmentation(rows, RunContext(DATASET, {"image": {}}, None), settings)
    record = run.record
    assert record.feature_space is FeatureSpace.BACKBONE and record.details["decoder"] == "unet"
    assert record.details["mask_size"] == SIZE and run.arrays["overlay_predicted"].shape[1:] == (SIZE, SIZE)
    assert record.metrics["dice_positive"].point >= 0.6


def test_segmentation_with_the_unet_refuses_a_store_without_maps(toy) -> None:
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    settings = SegmentSettings(fractions=(100.0,), n_resamples=20, recipe=SegmentationProtocol(max_epochs=1),
                               unet_width_divisor=8)
    with pytest.raises(MissingFeatureMaps, match=f"--backbone {VISION} --dataset {DATASET} --feature-maps"):
        run_segmentation(rows, RunContext(DATASET, {"image": {}}, None), settings)


def test_the_segment_command_runs_the_unet_and_refuses_a_width_it_cannot_divide(toy, tmp_path) -> None:
    _toy_maps_store(toy)
    common = ["evaluate", "segment", "--cache", str(toy.cache_dir), "--dataset", DATASET, "--vision", CNN,
              "--fractions", "100", "--epochs", "3", "--resamples", "10", "--out", str(tmp_path / "results")]
    refused = CliRunner().invoke(app, [*common, "--unet", "3"])
    assert refused.exit_code == 2 and "must divide the published widths" in refused.output
    done = CliRunner().invoke(app, [*common, "--unet", "8"])
    assert done.exit_code == 0, done.output
    assert f"| decoder | {CNN} feature maps |" in done.output
    [result] = (tmp_path / "results").rglob("*.json")
    details = json.loads(result.read_text())["details"]
    assert details["decoder"] == "unet" and details["training"]["validated_epochs"] == [3]
