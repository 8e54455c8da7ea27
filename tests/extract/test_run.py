"""Extraction runs: faults masked and reported, resume after kill -9, reruns, Dask equals in-process."""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr.storage._local
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, ProvenanceMismatch, verify_store
from adaptor_vlp.cache_schema.lock import lock_path, read_holder
from adaptor_vlp.cli import app
from adaptor_vlp.extract.encoders import TextEncoder
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.run import run_extraction
from tests.extract.conftest import CORRUPT_ROW, EMPTY_REPORT_STUDY, MISSING_ROW, N_IMAGES

runner = CliRunner()


def _copy_cache(cache: Path, destination: Path) -> Path:
    """A fresh cache holding only the manifest, so each test extracts from scratch."""
    shutil.copytree(cache / "tiny", destination / "tiny", ignore=shutil.ignore_patterns("image", "text"))
    return destination


def _image_job(cache: Path, **overrides) -> ExtractionJob:
    options = dict(tokens=True, views=2, batch_size=4, num_workers=0, shard_rows=4)
    return ExtractionJob(cache, "tiny", Modality.IMAGE, "tiny-vit", **{**options, **overrides})


def _array_bytes(store: Path) -> dict[str, bytes]:
    """Every data object (the shard files of each array) and completion marker of a store, by relative path.

    Only the `zarr.json` files are left out: the group's holds the store's creation time. Markers hold
    no time, so they compare byte for byte (they carry each shard file's SHA-256).
    """
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


IMAGE_COMMAND = ["extract", "images", "--dataset", "tiny", "--backbone", "tiny-vit", "--tokens", "--views", "2",
                 "--batch-size", "4", "--workers", "0", "--shard-rows", "4", "--device", "cpu"]
"""The CLI spelling of `_image_job(cache)`."""


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
    assert any("_shards" in name for name in expected)


def test_local_dask_cluster_writes_the_same_store_as_one_process(tiny_dataset, tmp_path) -> None:
    """Inside daemonic Dask workers the job's decoders are threads (num_workers=2 in each shard task)."""
    in_process = _copy_cache(tiny_dataset[0], tmp_path / "a")
    on_dask = _copy_cache(tiny_dataset[0], tmp_path / "b")
    run_extraction(_image_job(in_process))
    summary = run_extraction(_image_job(on_dask, num_workers=2), scheduler="local:2")
    assert summary.shards_skipped == 0 and verify_store(summary.store).ok
    assert _array_bytes(on_dask / "tiny" / "image" / "tiny-vit.zarr") == \
        _array_bytes(in_process / "tiny" / "image" / "tiny-vit.zarr")


def _store(cache: Path) -> Path:
    return cache / "tiny" / "image" / "tiny-vit.zarr"


def test_damaged_shards_are_named_repaired_and_rewritten_to_a_clean_runs_bytes(tiny_dataset, tmp_path) -> None:
    clean = _copy_cache(tiny_dataset[0], tmp_path / "clean")
    run_extraction(_image_job(clean))
    cache = _copy_cache(tiny_dataset[0], tmp_path / "damaged")
    run_extraction(_image_job(cache))
    store = _store(cache)
    flipped = store / "tokens" / "c" / "1" / "0" / "0"
    data = bytearray(flipped.read_bytes())
    data[100] ^= 0x10
    flipped.write_bytes(bytes(data))
    truncated = store / "embedding" / "c" / "2" / "0"
    truncated.write_bytes(truncated.read_bytes()[:-40])

    verify = runner.invoke(app, ["cache", "verify", str(cache)])
    assert verify.exit_code == 1
    assert f"problem: {store}: shard 1 (rows 4-7), array 'tokens': tokens/c/1/0/0 content changed" in verify.output
    assert f"problem: {store}: shard 2 (rows 8-11), array 'embedding': embedding/c/2/0 holds" in verify.output
    repair = runner.invoke(app, ["cache", "repair", str(store)])
    assert repair.exit_code == 0 and "shards 1, 2 marked incomplete" in repair.output
    rerun = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache)])
    assert rerun.exit_code == 0, rerun.output
    assert "in 2 shards (1 already complete)" in rerun.output
    assert _array_bytes(store) == _array_bytes(_store(clean))


def test_a_full_disk_stops_with_what_is_kept_and_the_same_command_resumes(tiny_dataset, tmp_path, monkeypatch) -> None:
    clean = _copy_cache(tiny_dataset[0], tmp_path / "clean")
    run_extraction(_image_job(clean))
    cache = _copy_cache(tiny_dataset[0], tmp_path / "full")
    real_put = zarr.storage._local._put

    def disk_full_at_the_third_shard(path, value, exclusive=False):
        if "embedding/c/2/" in path.as_posix():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)

    monkeypatch.setattr(zarr.storage._local, "_put", disk_full_at_the_third_shard)
    failed = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache)])
    assert failed.exit_code == 1
    message = failed.output.strip().splitlines()[-1]
    assert message.startswith(f"error: cannot write {_store(cache)}/") and "no space left on the device" in message
    assert f"2 of 3 shards of {_store(cache)} are complete and kept" in message
    assert "rerun the same command" in message and "Traceback" not in failed.output
    assert CacheStore.open(_store(cache)).complete_shard_indices() == {0, 1}

    monkeypatch.setattr(zarr.storage._local, "_put", real_put)
    resumed = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache)])
    assert resumed.exit_code == 0 and "(2 already complete)" in resumed.output
    assert _array_bytes(_store(cache)) == _array_bytes(_store(clean))


def test_a_second_run_on_the_same_store_is_refused_naming_the_first(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    command = [sys.executable, "-m", "adaptor_vlp", *IMAGE_COMMAND, "--shard-rows", "1", "--batch-size", "1",
               "--cache", str(cache)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lock = lock_path(_store(cache))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and read_holder(lock) is None:
        time.sleep(0.005)
    second = runner.invoke(app, [*IMAGE_COMMAND, "--shard-rows", "1", "--batch-size", "1", "--cache", str(cache)])
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert second.exit_code == 2
    assert f"error: {_store(cache)}: another store run holds its lock {lock} (pid {first.pid} on" in second.output
    assert verify_store(_store(cache)).ok and not lock.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_path(_store(cache))
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "command": "adaptor extract images",
                                "started": "2024-01-01T00:00:00+00:00"}))
    result = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert f"note: took over the lock {lock} of a store run that is gone (pid {dead.pid}" in result.output


def test_an_encoder_error_names_studies_by_id_and_never_prints_a_report(tiny_dataset, tmp_path, monkeypatch) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)

    def quoting_encoder(self, texts, with_tokens=False):
        raise ValueError(f"cannot tokenize {texts[0]!r}")

    monkeypatch.setattr(TextEncoder, "encode", quoting_encoder)
    result = runner.invoke(app, ["extract", "texts", "--cache", str(cache), "--dataset", "tiny", "--backbone",
                                 "tiny-bert", "--batch-size", "4", "--device", "cpu"])
    assert result.exit_code == 2
    assert ("the text encoder failed on the reports of studies 50000000, 50000001, 50000003 (store rows 0-3): "
            "ValueError: cannot tokenize '<report of study 50000000>'") in result.output
    reports = [row.report_text for row in tiny_dataset[1].rows if row.report_text]
    assert reports and not any(text in result.output for text in reports)
