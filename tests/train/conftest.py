"""Small paired stores with a real image-text signal, written with cache_schema directly.

Each study has one or two images; an image's pooled embedding is its study's latent vector plus
a little noise, and the study's text embedding is a fixed random linear map of the same latent
plus noise, so an Adaptor that learns the map retrieves the right text far above chance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance, store_path
from adaptor_vlp.train.recipe import DEMO, Recipe

DATASET = "toy-cxr"
VISION = "toy-vit"
TEXT = "toy-bert"
MANIFEST_SHA = "c" * 64
TOY_RECIPE: Recipe = DEMO.with_overrides(dict(epochs=4, batch_size=32, lr=3e-3, projection_dim=64, num_heads=4,
                                                ffn_dim=64))
"""The demo recipe shrunk to the toy data: a few hundredths of a second per epoch."""


@dataclass(frozen=True)
class ToyCache:
    """Where the toy stores live and what they were built with."""

    cache_dir: Path
    image_store: CacheStore
    text_store: CacheStore


def provenance(modality: Modality, backbone: str, manifest_sha: str = MANIFEST_SHA, dataset: str = DATASET,
               **overrides) -> Provenance:
    fields = dict(dataset=dataset, manifest_sha256=manifest_sha, modality=modality, backbone=backbone,
                  weights_id=f"{backbone}:toy", weights_sha256="d" * 64, preprocessing={"size": 32},
                  pooling="cls", created="2024-01-01T00:00:00+00:00")
    return Provenance(**{**fields, **overrides})


def build_toy_cache(
    cache_dir: Path,
    n_train_studies: int = 120,
    n_val_studies: int = 40,
    n_test_studies: int = 10,
    image_dim: int = 16,
    text_dim: int = 12,
    views: int = 0,
    token_count: int = 0,
    shard_rows: int = 32,
    seed: int = 0,
    vision: str = VISION,
    text: str = TEXT,
    manifest_sha: str = MANIFEST_SHA,
    dataset: str = DATASET,
    noise: float = 0.3,
    weights_sha: str = "d" * 64,
) -> ToyCache:
    """Writes an image and a text store for one toy dataset; every third study has two images."""
    rng = np.random.default_rng(seed)
    split_of_study = ["train"] * n_train_studies + ["validate"] * n_val_studies + ["test"] * n_test_studies
    n_studies = len(split_of_study)
    latent = rng.standard_normal((n_studies, image_dim))
    text_map = rng.standard_normal((image_dim, text_dim))
    study_ids = [f"5{index:07d}" for index in range(n_studies)]
    image_study = [study for study in range(n_studies) for _ in range(2 if study % 3 == 0 else 1)]
    image_ids = [f"img-{row:06d}" for row in range(len(image_study))]

    image_embeddings = latent[image_study] + noise * rng.standard_normal((len(image_study), image_dim))
    text_embeddings = latent @ text_map / np.sqrt(image_dim) + noise * rng.standard_normal((n_studies, text_dim))
    image_arrays = {ArrayName.EMBEDDING: image_embeddings}
    text_arrays = {ArrayName.EMBEDDING: text_embeddings}
    if views:
        image_arrays[ArrayName.VIEWS] = (image_embeddings[:, None, :]
                                         + noise * rng.standard_normal((len(image_study), views, image_dim)))
    if token_count:
        image_arrays.update(_tokens(rng, image_embeddings, token_count, noise))
        text_arrays.update(_tokens(rng, text_embeddings, token_count, noise))

    image_store = _write_store(
        store_path(cache_dir, dataset, Modality.IMAGE, vision),
        provenance(Modality.IMAGE, vision, manifest_sha, dataset, weights_sha256=weights_sha),
        image_ids, [study_ids[s] for s in image_study], [split_of_study[s] for s in image_study],
        FeatureShape(image_dim, token_count, image_dim if token_count else 0, views), image_arrays, shard_rows)
    text_store = _write_store(
        store_path(cache_dir, dataset, Modality.TEXT, text),
        provenance(Modality.TEXT, text, manifest_sha, dataset, weights_sha256=weights_sha),
        study_ids, study_ids, split_of_study,
        FeatureShape(text_dim, token_count, text_dim if token_count else 0), text_arrays, shard_rows)
    return ToyCache(Path(cache_dir), image_store, text_store)


def add_text_store(cache: ToyCache, text: str, text_dim: int, seed: int = 1, unusable: int = 0) -> CacheStore:
    """Another text encoder's store of the same studies (a width of its own), its texts tied to the studies' images.

    The first `unusable` training studies get no usable text in it (their rows marked invalid), so
    this store pairs fewer training images than the first.
    """
    rng = np.random.default_rng(seed)
    studies = list(cache.text_store.ids)
    first_image = {}
    for row, study in enumerate(cache.image_store.group_ids):
        first_image.setdefault(study, row)
    image = cache.image_store.read(ArrayName.EMBEDDING).astype(np.float64)[[first_image[s] for s in studies]]
    text_map = rng.standard_normal((image.shape[1], text_dim))
    embeddings = image @ text_map / np.sqrt(image.shape[1]) + 0.3 * rng.standard_normal((len(studies), text_dim))
    store = CacheStore.create(store_path(cache.cache_dir, DATASET, Modality.TEXT, text),
                              provenance(Modality.TEXT, text), studies, studies, list(cache.text_store.splits),
                              FeatureShape(text_dim, 0, 0), shard_rows=cache.text_store.shard_rows)
    for span in store.shards():
        failed = {row: "empty report" for row in range(span.start, min(span.stop, unusable))}
        store.write_shard(span.index, {ArrayName.EMBEDDING: embeddings[span.rows]}, failed)
    return store


def _tokens(rng: np.random.Generator, pooled: np.ndarray, token_count: int, noise: float) -> dict:
    """Token sequences of varying length whose real tokens scatter around the pooled vector."""
    n, dim = pooled.shape
    tokens = pooled[:, None, :] + noise * rng.standard_normal((n, token_count, dim))
    lengths = rng.integers(1, token_count + 1, size=n)
    mask = np.arange(token_count)[None, :] < lengths[:, None]
    return {ArrayName.TOKENS: np.where(mask[..., None], tokens, 0.0), ArrayName.TOKEN_MASK: mask}


def _write_store(path: Path, prov: Provenance, ids: list[str], group_ids: list[str], splits: list[str],
                 features: FeatureShape, arrays: dict, shard_rows: int) -> CacheStore:
    store = CacheStore.create(path, prov, ids, group_ids, splits, features, shard_rows=shard_rows)
    for span in store.shards():
        store.write_shard(span.index, {name: values[span.rows] for name, values in arrays.items()})
    return store


@pytest.fixture
def toy_cache(tmp_path: Path) -> ToyCache:
    return build_toy_cache(tmp_path / "cache")


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread: on these tiny models a second thread costs more than it saves, and on a busy
    2-core machine two threads spin against each other (50x slower epochs were measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
