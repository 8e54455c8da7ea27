"""Intermediate feature maps in a store: declared sizes, compressed per sample, read back, verified, repaired."""
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, StoreError, verify_store
from adaptor_vlp.cache_schema.arrays import default_shard_rows
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from tests.cache_schema.conftest import make_provenance

MAPS = ((4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2))
FEATURES = FeatureShape(embedding_dim=8, feature_maps=MAPS)
IDS = [f"{i:08x}-dicom" for i in range(6)]


def _store(tmp_path: Path) -> CacheStore:
    return CacheStore.create(tmp_path / "demo" / "image" / "tiny-cnn.zarr", make_provenance(), IDS,
                             [f"5{i:07d}" for i in range(6)], ["train"] * 4 + ["validate", "test"], FEATURES,
                             shard_rows=4)


def _arrays(store: CacheStore, index: int) -> dict:
    span = store.shards()[index]
    rng = np.random.default_rng(index)
    n = span.stop - span.start
    maps = {name: np.maximum(rng.standard_normal((n, *level)), 0).astype(np.float32)
            for name, level in zip(FEATURE_MAP_ARRAYS, MAPS)}
    return {ArrayName.EMBEDDING: rng.standard_normal((n, 8)).astype(np.float32), **maps}


def test_maps_round_trip_as_float16_and_failed_rows_are_nan(tmp_path: Path) -> None:
    store = _store(tmp_path)
    written = [_arrays(store, span.index) for span in store.shards()]
    store.write_shard(0, written[0], failed_rows={2: "unreadable image"})
    store.write_shard(1, written[1])
    reopened = CacheStore.open(store.path)
    assert reopened.features == FEATURES and reopened.has(ArrayName.FEATURE_MAP_4)
    level_1 = reopened.read(ArrayName.FEATURE_MAP_1)
    expected = np.concatenate([w[ArrayName.FEATURE_MAP_1] for w in written]).astype(np.float16)
    assert level_1.shape == (6, 4, 16, 16) and level_1.dtype == np.float16
    assert np.isnan(level_1[2]).all()
    np.testing.assert_array_equal(np.delete(level_1, 2, axis=0), np.delete(expected, 2, axis=0))
    np.testing.assert_array_equal(reopened.read(ArrayName.FEATURE_MAP_3, np.array([5, 0])),
                                  expected_rows(written, ArrayName.FEATURE_MAP_3, [5, 0]))
    assert verify_store(reopened.path).ok


def expected_rows(written: list[dict], name: ArrayName, rows: list[int]) -> np.ndarray:
    return np.concatenate([w[name] for w in written]).astype(np.float16)[rows]


def test_maps_are_compressed_in_chunks_of_at_most_2_mib(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for span in store.shards():
        store.write_shard(span.index, _arrays(store, span.index))
    array = store.zarr_array(ArrayName.FEATURE_MAP_1)
    assert array.chunks == (4, 4, 16, 16) and array.shards == (4, 4, 16, 16)  # small rows share a chunk
    paper = CacheStore.create(tmp_path / "paper.zarr", make_provenance(), IDS[:2], ["1", "2"], ["train", "test"],
                              FeatureShape(512, feature_maps=((64, 112, 112), (256, 56, 56), (512, 28, 28),
                                                              (1024, 14, 14))))
    assert paper.zarr_array(ArrayName.FEATURE_MAP_1).chunks == (1, 64, 112, 112)  # 1.5 MiB a row: one per chunk
    level_4 = paper.zarr_array(ArrayName.FEATURE_MAP_4).chunks[0]
    assert paper.shard_rows % level_4 == 0 and level_4 * 1024 * 14 * 14 * 2 <= 2 * 2**20
    raw = 4 * 16 * 16 * 2 * 4
    assert store.shard_file(ArrayName.FEATURE_MAP_1, 0).stat().st_size < raw  # half the values are ReLU zeros
    assert store.attributes()["features"]["feature_maps"] == [list(level) for level in MAPS]


def test_a_store_without_maps_says_how_to_extract_them(tmp_path: Path) -> None:
    store = CacheStore.create(tmp_path / "plain.zarr", make_provenance(), IDS[:2], ["1", "2"], ["train", "test"],
                              FeatureShape(embedding_dim=8))
    assert "feature_maps" not in store.attributes()["features"]
    with pytest.raises(StoreError, match="--feature-maps"):
        store.read(ArrayName.FEATURE_MAP_2)


def test_feature_maps_need_four_levels_of_three_sizes() -> None:
    with pytest.raises(ValueError, match="4 levels"):
        FeatureShape(embedding_dim=8, feature_maps=((4, 16, 16),))


def test_the_shard_plan_follows_the_widest_map() -> None:
    paper = FeatureShape(embedding_dim=512, feature_maps=((64, 112, 112), (256, 56, 56), (512, 28, 28),
                                                           (1024, 14, 14)))
    assert paper.row_bytes() == 2 * 64 * 112 * 112
    assert default_shard_rows(paper) == 128 * 2**20 // (2 * 64 * 112 * 112)
