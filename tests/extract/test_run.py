"""Extraction runs: faults masked and reported, resume after kill -9, reruns, Dask equals in-process, several
backbones in one pass."""
import dataclasses
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
from adaptor_vlp.cache_schema.lock import FolderLock, lock_path, read_holder
from adaptor_vlp.cli import app
from adaptor_vlp.extract.device_decoding import Decoder
from adaptor_vlp.extract.encoders import ReportTokenizer
from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.run import run_extraction, run_multi_extraction
from tests.extract.conftest import CORRUPT_ROW, EMPTY_REPORT_STUDY, MISSING_ROW, N_IMAGES

runner = CliRunner()


def _copy_cache(cache: Path, destination: Path) -> Path:
    """A fresh cache holding only the manifest, so each test extracts from scratch."""
    shutil.copytree(cache / "tiny", destination / "tiny", ignore=shutil.ignore_patterns("image", "text"))
    return destination


def _image_job(cache: Path, backbone: str = "tiny-vit", **overrides) -> ExtractionJob:
    options = dict(tokens=True, views=2, batch_size=4, num_workers=0, shard_rows=4)
    return ExtractionJob(cache, "tiny", Modality.IMAGE, backbone, **{**options, **overrides})


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_reports_tokenised_in_worker_processes_give_the_in_series_store_bytes(tiny_dataset, tmp_path) -> None:
    stores = []
    for workers in (0, 2):
        cache = _copy_cache(tiny_dataset[0], tmp_path / f"workers-{workers}")
        job = ExtractionJob(cache, "tiny", Modality.TEXT, "tiny-bert", tokens=True, batch_size=4, shard_rows=4,
                            num_workers=workers)
        stores.append(run_extraction(job).store)
    assert _array_bytes(stores[0]) == _array_bytes(stores[1])


def test_an_encoder_error_names_studies_by_id_and_never_prints_a_report(tiny_dataset, tmp_path, monkeypatch) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)

    def quoting_tokenizer(self, texts):
        raise ValueError(f"cannot tokenize {texts[0]!r}")

    monkeypatch.setattr(ReportTokenizer, "__call__", quoting_tokenizer)  # raised in a tokenising worker process
    result = runner.invoke(app, ["extract", "texts", "--cache", str(cache), "--dataset", "tiny", "--backbone",
                                 "tiny-bert", "--batch-size", "4", "--device", "cpu", "--workers", "1"])
    assert result.exit_code == 2
    assert ("the text encoder failed on the reports of studies 50000000, 50000001, 50000003 (store rows 0-3): "
            "ValueError: cannot tokenize '<report of study 50000000>'") in result.output
    reports = [row.report_text for row in tiny_dataset[1].rows if row.report_text]
    assert reports and not any(text in result.output for text in reports)


# Several backbones in one pass ------------------------------------------------------------------

PASS_BACKBONES = ("tiny-vit", "tiny-resnet", "tiny-vit-wide")
WIDE_REGISTRY = """
[backbones.tiny-vit-wide]
modality = "image"
source = "timm"
model_id = "test_vit"
dim = 64
pooling = "cls"
random_init_seed = 5
[backbones.tiny-vit-wide.image]
steps = [
    { op = "resize_shortest", size = 96, interpolation = "bicubic" },
    { op = "center_crop", size = 96 },
]
"""
"""A third tiny backbone with a larger input (96 px against the others' 64), so a pass decodes at 96."""


@pytest.fixture
def wide_registry(tmp_path) -> tuple[Path, ...]:
    path = tmp_path / "wide.toml"
    path.write_text(WIDE_REGISTRY)
    return (path,)


def _pass_jobs(cache: Path, registry: tuple[Path, ...], backbones=PASS_BACKBONES, **overrides) -> list[ExtractionJob]:
    return [_image_job(cache, backbone=name, registry=registry, **overrides) for name in backbones]


def _image_store(cache: Path, backbone: str) -> Path:
    return cache / "tiny" / "image" / f"{backbone}.zarr"


def test_one_pass_writes_each_store_as_a_single_run_at_the_same_decode_size(tiny_dataset, tmp_path,
                                                                             wide_registry) -> None:
    one_pass = _copy_cache(tiny_dataset[0], tmp_path / "pass")
    summaries = run_multi_extraction(_pass_jobs(one_pass, wide_registry))
    assert [s.store for s in summaries] == [_image_store(one_pass, name) for name in PASS_BACKBONES]
    assert all(s.rows_done == N_IMAGES and s.failures == summaries[0].failures for s in summaries)

    singles = _copy_cache(tiny_dataset[0], tmp_path / "singles")
    for name in PASS_BACKBONES:
        run_extraction(_image_job(singles, backbone=name, registry=wide_registry, decode_size=DecodeSize(96)))
        assert _array_bytes(_image_store(one_pass, name)) == _array_bytes(_image_store(singles, name)), name
        store = CacheStore.open(_image_store(one_pass, name))
        assert store.provenance.to_json() | {"created": None} == \
            CacheStore.open(_image_store(singles, name)).provenance.to_json() | {"created": None}
        assert store.provenance.preprocessing["decode_size"] == 96

    default = _copy_cache(tiny_dataset[0], tmp_path / "default")
    run_extraction(_image_job(default, backbone="tiny-vit-wide", registry=wide_registry))
    assert _array_bytes(_image_store(default, "tiny-vit-wide")) == _array_bytes(
        _image_store(one_pass, "tiny-vit-wide")
    ), "the backbone with the largest input decodes as it always did"


def test_one_pass_keeps_each_backbones_own_extra_arrays(tiny_dataset, tmp_path) -> None:
    """A segmentation pass: patch tokens for a ViT's decoder and feature maps for a CNN's U-Net, images decoded
    once for both, each store as its own run writes it."""
    wanted = {"tiny-vit": {"tokens": True, "views": 0},
              "tiny-resnet": {"tokens": False, "feature_maps": True, "views": 0}}
    one_pass = _copy_cache(tiny_dataset[0], tmp_path / "pass")
    run_multi_extraction([_image_job(one_pass, backbone=name, **extras) for name, extras in wanted.items()])
    singles = _copy_cache(tiny_dataset[0], tmp_path / "singles")
    for name, extras in wanted.items():
        run_extraction(_image_job(singles, backbone=name, **extras))
        assert _array_bytes(_image_store(one_pass, name)) == _array_bytes(_image_store(singles, name)), name
    vit, resnet = (CacheStore.open(_image_store(one_pass, name)) for name in wanted)
    assert vit.has(ArrayName.TOKENS) and not vit.has(ArrayName.FEATURE_MAP_1)
    assert resnet.has(ArrayName.FEATURE_MAP_1) and not resnet.has(ArrayName.TOKENS)


def test_a_store_decoded_at_another_size_is_refused_naming_the_field(tiny_dataset, tmp_path, wide_registry) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    run_extraction(_image_job(cache))
    assert CacheStore.open(_store(cache)).provenance.preprocessing["decode_size"] == 64
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decode_size' differs: expected 96, found 64"):
        run_multi_extraction(_pass_jobs(cache, wide_registry))
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decode_size' differs: expected 'full', found 64"):
        run_extraction(_image_job(cache, decode_size=DecodeSize(None)))

    metadata = _store(cache) / "zarr.json"  # a store written before the decode size was recorded
    document = json.loads(metadata.read_text())
    del document["attributes"]["adaptor_vlp"]["provenance"]["preprocessing"]["decode_size"]
    metadata.write_text(json.dumps(document))
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decode_size' differs: expected 64, found '<absent>'"):
        run_extraction(_image_job(cache))


MEASURED_REGISTRY = """
[backbones.tiny-area]
modality = "image"
source = "timm"
model_id = "test_vit"
dim = 64
pooling = "cls"
random_init_seed = 5
[backbones.tiny-area.image]
steps = [
    { op = "resize_longest", size = 64, interpolation = "area" },
    { op = "pad_square" },
]
decode_size = 96
"""
"""An area-resize backbone whose registry entry states a measured decode size, as the paper's DINOv2 entries do."""


def test_a_store_from_before_a_measured_decode_size_is_refused_naming_the_field(tiny_dataset, tmp_path) -> None:
    registry = tmp_path / "measured.toml"
    registry.write_text(MEASURED_REGISTRY)
    cache = _copy_cache(tiny_dataset[0], tmp_path / "cache")
    job = _image_job(cache, backbone="tiny-area", registry=(registry,), tokens=False, views=0)
    run_extraction(dataclasses.replace(job, decode_size=DecodeSize(None)))  # what `auto` chose before
    store = _image_store(cache, "tiny-area")
    assert "reduced_decode_frame" not in CacheStore.open(store).provenance.preprocessing
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decode_size' differs: expected 96, found 'full'"):
        run_extraction(job)
    run_extraction(dataclasses.replace(job, decode_size=DecodeSize(None)))  # the exact decode, by name, resumes

    reduced = _copy_cache(tiny_dataset[0], tmp_path / "reduced")
    run_extraction(dataclasses.replace(job, cache_dir=reduced))
    recorded = CacheStore.open(_image_store(reduced, "tiny-area")).provenance.preprocessing
    assert (recorded["decode_size"], recorded["reduced_decode_frame"]) == (96, "full resolution")
    metadata = _image_store(reduced, "tiny-area") / "zarr.json"  # a reduced store from before the frame was kept
    document = json.loads(metadata.read_text())
    del document["attributes"]["adaptor_vlp"]["provenance"]["preprocessing"]["reduced_decode_frame"]
    metadata.write_text(json.dumps(document))
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.reduced_decode_frame' differs: "
                                                 "expected 'full resolution', found '<absent>'"):
        run_extraction(dataclasses.replace(job, cache_dir=reduced))


def test_a_store_is_refused_for_resume_by_the_other_jpeg_decoder_naming_the_field(tiny_dataset, tmp_path) -> None:
    """`--decoder gpu` runs torchvision's decode_jpeg on the job's device: here the CPU, which exercises its path."""
    on_cpu = _copy_cache(tiny_dataset[0], tmp_path / "cpu")
    cpu_summary = run_extraction(_image_job(on_cpu, tokens=False, views=0))
    assert "decoder" not in CacheStore.open(cpu_summary.store).provenance.preprocessing, "CPU stores are as before"
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decoder' differs: "
                                                 "expected 'torchvision.io.decode_jpeg on cpu', found '<absent>'"):
        run_extraction(_image_job(on_cpu, tokens=False, views=0, decoder=Decoder.GPU))

    on_device = _copy_cache(tiny_dataset[0], tmp_path / "device")
    device_summary = run_extraction(_image_job(on_device, tokens=False, views=0, decoder=Decoder.GPU, num_workers=2))
    assert CacheStore.open(device_summary.store).provenance.preprocessing["decoder"] == \
        "torchvision.io.decode_jpeg on cpu"
    assert device_summary.failures == cpu_summary.failures, "missing and truncated files fail alike"
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.decoder' differs: "
                                                 "expected '<absent>', found 'torchvision.io.decode_jpeg on cpu'"):
        run_extraction(_image_job(on_device, tokens=False, views=0))


def test_the_gpu_decoder_needs_a_cuda_device(tiny_dataset, tmp_path) -> None:
    result = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(tmp_path), "--decoder", "gpu"])
    assert result.exit_code == 2 and "--decoder gpu decodes on the CUDA device" in result.output, result.output


@pytest.mark.slow
def test_a_killed_pass_resumes_every_store_to_a_clean_runs_bytes(tiny_dataset, tmp_path) -> None:
    backbones = ("tiny-vit", "tiny-resnet")
    clean = _copy_cache(tiny_dataset[0], tmp_path / "clean")
    run_multi_extraction(_pass_jobs(clean, (), backbones, shard_rows=1, batch_size=1))

    killed = _copy_cache(tiny_dataset[0], tmp_path / "killed")
    command = [sys.executable, "-m", "adaptor_vlp", *IMAGE_COMMAND, "--backbone", ",".join(backbones),
               "--shard-rows", "1", "--batch-size", "1", "--cache", str(killed)]
    log = tmp_path / "killed.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        markers = _image_store(killed, backbones[-1]) / "_shards"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and len(list(markers.glob("*.json"))) < 2:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = [len(CacheStore.open(_image_store(killed, name)).complete_shard_indices()) for name in backbones]
    assert all(count < N_IMAGES for count in done) and sum(done) >= 2, \
        f"the pass must have been killed part way; shards done {done}, exit {process.returncode}: {log.read_text()}"

    resumed = run_multi_extraction(_pass_jobs(killed, (), backbones, shard_rows=1, batch_size=1))
    assert [s.shards_skipped for s in resumed] == done
    for name in backbones:
        assert _array_bytes(_image_store(killed, name)) == _array_bytes(_image_store(clean, name)), name


@pytest.mark.slow
def test_each_store_resumes_from_its_own_shards_in_dask_tasks_covering_the_stores_that_lack_them(
        tiny_dataset, tmp_path) -> None:
    backbones = ("tiny-vit", "tiny-resnet")
    clean = _copy_cache(tiny_dataset[0], tmp_path / "clean")
    run_multi_extraction(_pass_jobs(clean, (), backbones))
    cache = _copy_cache(tiny_dataset[0], tmp_path / "behind")
    run_multi_extraction(_pass_jobs(cache, (), backbones))
    for name, shards in zip(backbones, ({1, 2}, {2})):  # as a kill at different shards of each store leaves them
        for shard in shards:
            (_image_store(cache, name) / "_shards" / f"{shard:06d}.json").unlink()

    resumed = run_multi_extraction(_pass_jobs(cache, (), backbones, num_workers=2), scheduler="local:1")
    assert [(s.shards_skipped, s.rows_done) for s in resumed] == [(1, 8), (2, 4)]
    for name in backbones:
        assert _array_bytes(_image_store(cache, name)) == _array_bytes(_image_store(clean, name)), name


def test_a_pass_holds_every_stores_lock_and_starts_nothing_when_one_is_taken(tiny_dataset, tmp_path) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    taken = _image_store(cache, "tiny-resnet")
    with FolderLock.acquire(taken, "store"):
        result = runner.invoke(app, [*IMAGE_COMMAND, "--backbone", "tiny-vit,tiny-resnet", "--cache", str(cache)])
    assert result.exit_code == 2
    assert f"error: {taken}: another store run holds its lock {lock_path(taken)}" in result.output
    assert not _store(cache).exists() and not lock_path(_store(cache)).exists()


@pytest.mark.parametrize("options, message", [
    (["--backbone", "tiny-vit,nope"], "unknown backbone 'nope'"),
    (["--backbone", "tiny-vit,minilm"], "backbone 'minilm' is a text backbone; `adaptor extract images` takes "
                                        "image backbones (extract it with `adaptor extract texts`)"),
    (["--backbone", "tiny-vit,tiny-resnet,tiny-vit"], "backbone 'tiny-vit' is named more than once"),
    (["--backbone", "tiny-vit,,tiny-resnet"], "--backbone 'tiny-vit,,tiny-resnet': an empty name"),
    (["--backbone", "tiny-vit,tiny-resnet", "--weights", "w.safetensors"], "--weights names one backbone's"),
    (["--decode-size", "32"], "--decode-size 32 is too small for backbone 'tiny-vit': its steps need at least 64 px"),
    (["--decode-size", "large"], "decode size 'large': give 'full' or the shorter side in pixels"),
])
def test_a_backbone_list_or_decode_size_that_cannot_run_gets_one_message(tiny_dataset, tmp_path, options,
                                                                         message) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path)
    result = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache), *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (cache / "tiny" / "image").exists()


def test_decode_size_on_the_command_line_reproduces_a_pass_and_each_store_is_reported(tiny_dataset, tmp_path,
                                                                                       wide_registry) -> None:
    cache = _copy_cache(tiny_dataset[0], tmp_path / "cli")
    registry = ["--registry", str(wide_registry[0])]
    result = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(cache), "--backbone", "tiny-vit,tiny-vit-wide",
                                 *registry])
    assert result.exit_code == 0, result.output
    for name in ("tiny-vit", "tiny-vit-wide"):
        assert f"{_image_store(cache, name)}:\n" in result.output
        assert f"-> {_image_store(cache, name)}" in result.output
    single = _copy_cache(tiny_dataset[0], tmp_path / "single")
    alone = runner.invoke(app, [*IMAGE_COMMAND, "--cache", str(single), "--decode-size", "96"])
    assert alone.exit_code == 0, alone.output
    assert _array_bytes(_store(single)) == _array_bytes(_image_store(cache, "tiny-vit"))
