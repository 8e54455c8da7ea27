"""Extraction runs: faults masked and reported, resume after kill -9, reruns, Dask equals in-process."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, ProvenanceMismatch, verify_store
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.run import run_extraction
from tests.extract.conftest import CORRUPT_ROW, EMPTY_REPORT_STUDY, MISSING_ROW, N_IMAGES


def _copy_cache(cache: Path, destination: Path) -> Path:
    """A fresh cache holding only the manifest, so each test extracts from scratch."""
    shutil.copytree(cache / "tiny", destination / "tiny", ignore=shutil.ignore_patterns("image", "text"))
    return destination


def _image_job(cache: Path, **overrides) -> ExtractionJob:
    options = dict(tokens=True, views=2, batch_size=4, num_workers=0, shard_rows=4)
    return ExtractionJob(cache, "tiny", Modality.IMAGE, "tiny-vit", **{**options, **overrides})


def _array_bytes(store: Path) -> dict[str, bytes]:
    """Every data object of a store (the shard files of each array), by relative path."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and "/c/" in f"/{p.relative_to(store)}"}


def test_faults_are_masked_recorded_and_summarised(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    summary = run_extraction(_image_job(cache))
    store = CacheStore.open(summary.store)
    assert summary.failures == {"unreadable image: file not found": 1,
                                "unreadable image: OSError: Truncated File Read": 1}
    assert np.flatnonzero(~store.valid).tolist() == [MISSING_ROW, CORRUPT_ROW]
    embeddings = store.read(ArrayName.EMBEDDING)
    assert np.isnan(embeddings[[MISSING_ROW, CORRUPT_ROW]]).all()
    assert np.isfinite(np.delete(embeddings, [MISSING_ROW, CORRUPT_ROW], axis=0)).all()
    assert store.read(ArrayName.VIEWS).shape == (N_IMAGES, 2, embeddings.shape[1])
    assert verify_store(store.path).ok

    texts = run_extraction(ExtractionJob(cache, "tiny", Modality.TEXT, "tiny-bert", batch_size=4))
    text_store = CacheStore.open(texts.store)
    assert [f.id for f in text_store.failures()] == [EMPTY_REPORT_STUDY]
    assert texts.failures == {"report unusable: empty report": 1}


def test_views_differ_from_the_plain_embedding_and_from_each_other(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    store = CacheStore.open(run_extraction(_image_job(cache, tokens=False)).store)
    plain, views = store.read(ArrayName.EMBEDDING)[0], store.read(ArrayName.VIEWS)[0]
    assert not np.allclose(plain, views[0]) and not np.allclose(views[0], views[1])


def test_rerun_does_nothing_overwrite_starts_over_and_other_settings_are_refused(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    first = run_extraction(_image_job(cache))
    again = run_extraction(_image_job(cache))
    assert again.shards_skipped == again.shards_total and again.final_line().startswith("nothing to do")
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.tokens' differs: expected False, found True"):
        run_extraction(_image_job(cache, tokens=False))
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.views' differs: expected 1, found 2"):
        run_extraction(_image_job(cache, views=1))
    assert CacheStore.open(first.store).provenance.preprocessing["forward_precision"] == "float32"
    with pytest.raises(ProvenanceMismatch,
                       match="'preprocessing.forward_precision' differs: expected 'bfloat16', found 'float32'"):
        run_extraction(_image_job(cache, precision=Precision.BFLOAT16))
    redone = run_extraction(_image_job(cache, views=1), overwrite=True)
    assert redone.shards_skipped == 0 and CacheStore.open(first.store).features.views == 1


def test_killed_run_resumes_to_byte_identical_arrays(tiny_dataset, tmp_path) -> None:
    uninterrupted = _copy_cache(tiny_dataset[0], tmp_path / "a")
    run_extraction(_image_job(uninterrupted, shard_rows=1, batch_size=1))

    killed = _copy_cache(tiny_dataset[0], tmp_path / "b")
    command = [sys.executable, "-m", "adaptor_vlp.extract", "images", "--dataset", "tiny", "--cache", str(killed),
               "--backbone", "tiny-vit", "--tokens", "--views", "2", "--shard-rows", "1", "--batch-size", "1",
               "--workers", "0", "--device", "cpu", "--precision", "float32"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    markers = killed / "tiny" / "image" / "tiny-vit.zarr" / "_shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before_kill = len(CacheStore.open(markers.parent).complete_shard_indices())
    assert 0 < done_before_kill < N_IMAGES, "the run must have been killed part way"

    resumed = run_extraction(_image_job(killed, shard_rows=1, batch_size=1))
    assert resumed.shards_skipped == done_before_kill
    expected = _array_bytes(uninterrupted / "tiny" / "image" / "tiny-vit.zarr")
    assert expected and _array_bytes(markers.parent) == expected


def test_local_dask_cluster_writes_the_same_store_as_one_process(tiny_dataset, tmp_path) -> None:
    """Inside daemonic Dask workers the job's decoders are threads (num_workers=2 in each shard task)."""
    in_process = _copy_cache(tiny_dataset[0], tmp_path / "a")
    on_dask = _copy_cache(tiny_dataset[0], tmp_path / "b")
    run_extraction(_image_job(in_process))
    summary = run_extraction(_image_job(on_dask, num_workers=2), scheduler="local:2")
    assert summary.shards_skipped == 0 and verify_store(summary.store).ok
    assert _array_bytes(on_dask / "tiny" / "image" / "tiny-vit.zarr") == \
        _array_bytes(in_process / "tiny" / "image" / "tiny-vit.zarr")
