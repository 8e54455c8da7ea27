"""Embedding a store with a trained Adaptor: a new cache store, row for row, named and traced to the checkpoint."""
import errno
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr.storage._local

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, ProvenanceMismatch, WriteFailed, store_path
from adaptor_vlp.train.checkpoint import file_sha256, load_adaptor
from adaptor_vlp.train.embed import embed_store
from adaptor_vlp.train.loop import train_adaptor
from adaptor_vlp.train.pairs import pair_stores
from tests.train.conftest import TOY_RECIPE, VISION, ToyCache, build_toy_cache


@pytest.fixture
def trained_run(toy_cache: ToyCache, tmp_path: Path) -> Path:
    run_dir = tmp_path / "demo-run"
    train_adaptor(pair_stores(toy_cache.image_store, toy_cache.text_store), TOY_RECIPE.with_overrides({"epochs": 1}),
                  run_dir, device="cpu")
    return run_dir


def test_embedding_writes_a_store_downstream_can_open_like_any_other(toy_cache: ToyCache, trained_run: Path) -> None:
    result = embed_store(trained_run, toy_cache.cache_dir, "toy-cxr", Modality.IMAGE, device="cpu")

    expected_path = store_path(toy_cache.cache_dir, "toy-cxr", Modality.IMAGE, f"{VISION}+adaptor-demo-run")
    store = CacheStore.open(expected_path, expect={"backbone": f"{VISION}+adaptor-demo-run",
                                                   "weights_sha256": file_sha256(trained_run / "best.safetensors")})
    assert result.store == expected_path and store.is_complete
    source = toy_cache.image_store
    assert list(store.ids) == list(source.ids) and list(store.splits) == list(source.splits)
    model = load_adaptor(trained_run).model
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(source.read(ArrayName.EMBEDDING).astype(np.float32)))
    assert np.allclose(store.read(ArrayName.EMBEDDING), expected.numpy(), atol=2e-3)
    assert store.provenance.preprocessing["source"]["backbone"] == VISION


def test_a_second_call_finds_every_shard_done(toy_cache: ToyCache, trained_run: Path) -> None:
    embed_store(trained_run, toy_cache.cache_dir, "toy-cxr", Modality.TEXT, device="cpu")

    again = embed_store(trained_run, toy_cache.cache_dir, "toy-cxr", Modality.TEXT, device="cpu")

    assert again.shards_written == 0 and again.shards_already_done == len(toy_cache.text_store.shards())


def test_another_dataset_from_the_same_backbone_is_embedded_and_its_failures_carried(
        trained_run: Path, tmp_path: Path) -> None:
    other = build_toy_cache(tmp_path / "other", dataset="rsna", manifest_sha="f" * 64, seed=5)
    source = other.image_store
    broken = CacheStore.open(source.path, writable=True)
    first = broken.shards()[0]
    arrays = {ArrayName.EMBEDDING: source.read(ArrayName.EMBEDDING, first.rows)}
    broken.write_shard(0, arrays, failed_rows={0: "corrupt JPEG"})

    result = embed_store(trained_run, tmp_path / "other", "rsna", Modality.IMAGE, device="cpu")

    store = CacheStore.open(result.store)
    assert result.failed_rows == 1 and not store.valid[0] and store.valid[1:].all()
    assert store.failures()[0].reason == "source row invalid: corrupt JPEG"
    assert np.isnan(store.read(ArrayName.EMBEDDING, slice(0, 1))).all()


def test_a_store_from_other_weights_is_refused_naming_the_field(trained_run: Path, tmp_path: Path) -> None:
    build_toy_cache(tmp_path / "other", dataset="rsna", weights_sha="0" * 64)

    with pytest.raises(ProvenanceMismatch, match="weights_sha256"):
        embed_store(trained_run, tmp_path / "other", "rsna", Modality.IMAGE, device="cpu")


def test_a_full_disk_keeps_the_written_shards_and_the_same_call_resumes(toy_cache: ToyCache, trained_run: Path,
                                                                       monkeypatch) -> None:
    real_put = zarr.storage._local._put

    def disk_full_at_shard_one(path, value, exclusive=False):
        if "embedding/c/1/" in path.as_posix():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)

    monkeypatch.setattr(zarr.storage._local, "_put", disk_full_at_shard_one)
    with pytest.raises(WriteFailed, match=r"no space left on the device .* 1 of \d+ shards of .* complete and kept"):
        embed_store(trained_run, toy_cache.cache_dir, "toy-cxr", Modality.TEXT, device="cpu")
    monkeypatch.setattr(zarr.storage._local, "_put", real_put)
    resumed = embed_store(trained_run, toy_cache.cache_dir, "toy-cxr", Modality.TEXT, device="cpu")
    assert resumed.shards_already_done == 1 and CacheStore.open(resumed.store).is_complete
