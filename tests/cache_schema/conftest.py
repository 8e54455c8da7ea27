"""A small store factory shared by the cache_schema tests."""
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance

N_ROWS = 10
SHARD_ROWS = 4
FEATURES = FeatureShape(embedding_dim=8, token_count=3, token_dim=8, views=2)


def make_provenance(**overrides) -> Provenance:
    fields = dict(
        dataset="demo", manifest_sha256="a" * 64, modality=Modality.IMAGE, backbone="tiny-vit",
        weights_id="random-init:seed=0", weights_sha256="b" * 64, preprocessing={"size": 64, "mean": [0.5]},
        pooling="cls",
    )
    return Provenance(**{**fields, **overrides})


def shard_arrays(store: CacheStore, index: int, seed: int = 0) -> dict:
    span = store.shards()[index]
    rng = np.random.default_rng(seed + index)
    n = span.stop - span.start
    return {
        ArrayName.EMBEDDING: rng.standard_normal((n, 8)).astype(np.float32),
        ArrayName.TOKENS: rng.standard_normal((n, 3, 8)).astype(np.float32),
        ArrayName.TOKEN_MASK: np.ones((n, 3), dtype=bool),
        ArrayName.VIEWS: rng.standard_normal((n, 2, 8)).astype(np.float32),
    }


@pytest.fixture
def ids() -> list[str]:
    return [f"{i:08x}-dicom" for i in range(N_ROWS)]


@pytest.fixture
def empty_store(tmp_path: Path, ids: list[str]) -> CacheStore:
    return CacheStore.create(
        tmp_path / "demo" / "image" / "tiny-vit.zarr", make_provenance(), ids,
        [f"5{i // 2:07d}" for i in range(N_ROWS)], ["train"] * 6 + ["validate"] * 2 + ["test"] * 2,
        FEATURES, shard_rows=SHARD_ROWS,
    )


@pytest.fixture
def full_store(empty_store: CacheStore) -> CacheStore:
    for span in empty_store.shards():
        empty_store.write_shard(span.index, shard_arrays(empty_store, span.index))
    return empty_store
