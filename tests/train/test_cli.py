"""`adaptor train run | sweep | embed` end to end, one-line errors, and no image or backbone library imported."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore, FeatureShape, FolderLock, Modality, store_path
from adaptor_vlp.cli import app
from tests.train.conftest import DATASET, TEXT, VISION, ToyCache, add_text_store, provenance

runner = CliRunner()
SMALL = ["--recipe", "demo", "--epochs", "2", "--batch-size", "32", "--projection-dim", "32", "--num-heads", "4",
         "--ffn-dim", "64", "--device", "cpu"]
FORBIDDEN_MODULES = ("PIL", "pydicom", "timm", "transformers", "cv2", "adaptor_vlp.extract", "adaptor_vlp.evaluate")


def train_command(cache: ToyCache, out: Path, *extra: str) -> list[str]:
    return ["train", "run", "--cache", str(cache.cache_dir), "--dataset", DATASET, "--vision", VISION,
            "--text", TEXT, "--out", str(out), *SMALL, *extra]


def test_run_prints_a_line_per_epoch_and_where_the_best_checkpoint_is(toy_cache: ToyCache, tmp_path: Path) -> None:
    result = runner.invoke(app, train_command(toy_cache, tmp_path / "run", "--lr", "0.003", "--data-pct", "50"))

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("epoch   1/2  train loss") and lines[1].startswith("epoch   2/2")
    assert lines[-1].startswith("best epoch") and "val recall@5" in lines[-1] and "trainable parameters" in lines[-1]
    assert str(tmp_path / "run" / "best.safetensors") in lines[-1]
    assert len((tmp_path / "run" / "data_subset.txt").read_text().split()) == 80


def test_resume_and_embed_from_the_command_line(toy_cache: ToyCache, tmp_path: Path) -> None:
    assert runner.invoke(app, train_command(toy_cache, tmp_path / "run")).exit_code == 0
    refused = runner.invoke(app, train_command(toy_cache, tmp_path / "run"))
    resumed = runner.invoke(app, train_command(toy_cache, tmp_path / "run", "--resume"))
    embedded = runner.invoke(app, ["train", "embed", "--run", str(tmp_path / "run"), "--cache",
                                   str(toy_cache.cache_dir), "--dataset", DATASET, "--modality", "text",
                                   "--device", "cpu"])

    assert refused.exit_code == 2 and "pass --resume" in refused.output
    assert resumed.exit_code == 0 and resumed.output.startswith("best epoch")
    assert embedded.exit_code == 0, embedded.output
    assert store_path(toy_cache.cache_dir, DATASET, Modality.TEXT, f"{TEXT}+adaptor-run").is_dir()


def test_sweep_from_the_command_line_writes_the_leaderboard(toy_cache: ToyCache, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("lr: [0.003]\nseed: [1, 2]\nepochs: 1\nbatch_size: 32\nprojection_dim: 32\nnum_heads: 4\n")

    result = runner.invoke(app, ["train", "sweep", "--grid", str(grid), "--out", str(tmp_path / "sweep"), "--cache",
                                 str(toy_cache.cache_dir), "--dataset", DATASET, "--vision", VISION, "--text", TEXT,
                                 "--recipe", "demo", "--device", "cpu", "--stack", "2", "--checkpoint-seconds", "0"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("2 combinations") and "leaderboard:" in result.output
    assert (tmp_path / "sweep" / "leaderboard.md").is_file()


def test_a_fast_sweep_across_text_stores_is_resumed_only_in_the_fast_form(toy_cache: ToyCache, tmp_path: Path) -> None:
    add_text_store(toy_cache, "toy-clinical", 20)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"text: [{TEXT}, toy-clinical]\nlr: [0.003]\nepochs: 2\nbatch_size: 32\nprojection_dim: 32\n"
                    "num_heads: 4\n")
    command = ["train", "sweep", "--grid", str(grid), "--out", str(tmp_path / "sweep"), "--cache",
               str(toy_cache.cache_dir), "--dataset", DATASET, "--vision", VISION, "--recipe", "demo", "--device",
               "cpu", "--stack", "2", "--checkpoint-seconds", "0"]

    fast = runner.invoke(app, command + ["--stack-mode", "fast"])
    interrupted = next((tmp_path / "sweep").glob("*toy-clinical*"))
    (interrupted / "completed.json").unlink()
    exact = runner.invoke(app, command)

    assert fast.exit_code == 0, fast.output
    assert json.loads((interrupted / "last.json").read_text())["provenance"]["training"] == {"stack_mode": "fast"}
    assert exact.exit_code == 2 and exact.output.strip().splitlines()[-1] == (
        f"error: {interrupted}: was trained with stack_mode='fast', this resume asks for 'exact'; resume with "
        "--stack-mode fast")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--vision", "nope"], "nope.zarr: no cache store here"),
        (["--expect-image", "weights_sha256=abc"], "provenance field 'weights_sha256' differs"),
        (["--lr", "-1"], "lr must be positive"),
        (["--device", "gpu0"], "not a device name"),
    ],
)
def test_input_errors_are_one_line_and_exit_code_2(toy_cache: ToyCache, tmp_path: Path, extra: list[str],
                                                   message: str) -> None:
    result = runner.invoke(app, train_command(toy_cache, tmp_path / "run") + extra)

    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_incomplete_store_is_refused(toy_cache: ToyCache, tmp_path: Path) -> None:
    path = store_path(toy_cache.cache_dir, DATASET, Modality.TEXT, "half-bert")
    CacheStore.create(path, provenance(Modality.TEXT, "half-bert"), list(toy_cache.text_store.ids),
                      list(toy_cache.text_store.group_ids), list(toy_cache.text_store.splits), FeatureShape(12))

    result = runner.invoke(app, train_command(toy_cache, tmp_path / "run", "--text", "half-bert"))

    assert result.exit_code == 2 and "shards are incomplete" in result.output


def test_a_bad_grid_file_is_refused_naming_the_key(toy_cache: ToyCache, tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text("pair = [['toy-vit', 'toy-bert']]\nbatchsize = [32]\n")

    result = runner.invoke(app, ["train", "sweep", "--grid", str(grid), "--out", str(tmp_path / "sweep"),
                                 "--cache", str(toy_cache.cache_dir), "--dataset", DATASET])

    assert result.exit_code == 2 and "batchsize" in result.output and str(grid) in result.output


@pytest.mark.slow
def test_the_train_package_imports_no_image_decoder_backbone_library_or_other_stage() -> None:
    code = ("import sys, pkgutil, importlib\nfrom adaptor_vlp import train\nimport adaptor_vlp.train.cli\n"
            "for module in pkgutil.iter_modules(train.__path__):\n"
            "    if module.name != '__main__':\n"
            "        importlib.import_module(f'adaptor_vlp.train.{module.name}')\n"
            f"print(sorted(name for name in {FORBIDDEN_MODULES!r} if name in sys.modules))")

    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert imported.stdout.strip() == "[]"


def test_a_truncated_shard_stops_training_naming_store_shard_and_remedy(toy_cache: ToyCache, tmp_path: Path) -> None:
    shard_file = toy_cache.image_store.path / "embedding" / "c" / "3" / "0"
    shard_file.write_bytes(shard_file.read_bytes()[:-100])

    result = runner.invoke(app, train_command(toy_cache, tmp_path / "run"))

    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    store = toy_cache.image_store.path
    assert result.output.startswith(f"error: {store}: shard 3 (rows 96-127) of array 'embedding': embedding/c/3/0 ")
    assert f"`adaptor cache verify {store}`" in result.output and f"`adaptor cache repair {store}`" in result.output
    assert "checksum do not match" not in result.output


def test_a_full_disk_keeps_the_finished_epochs_and_resume_continues(toy_cache: ToyCache, tmp_path: Path,
                                                                    monkeypatch) -> None:
    real_write_bytes = Path.write_bytes
    saves: list[str] = []

    def disk_full_in_epoch_two(self: Path, data: bytes) -> int:
        if self.name.startswith(".last.safetensors."):
            saves.append(self.name)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_in_epoch_two)
    failed = runner.invoke(app, train_command(toy_cache, tmp_path / "run", "--checkpoint-seconds", "0"))
    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)

    assert failed.exit_code == 1 and "Traceback" not in failed.output
    message = failed.output.strip().splitlines()[-1]
    assert message.startswith(f"error: cannot write {tmp_path / 'run' / 'last.safetensors'}: no space left")
    assert "Epochs 1-1 are complete and kept" in message and "with --resume: it continues with epoch 2" in message
    resumed = runner.invoke(app, train_command(toy_cache, tmp_path / "run", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.startswith("epoch   2/2") and not list((tmp_path / "run").glob(".*.tmp"))


def test_a_second_training_run_into_the_same_folder_is_refused(toy_cache: ToyCache, tmp_path: Path) -> None:
    with FolderLock.acquire(tmp_path / "run", "training"):
        result = runner.invoke(app, train_command(toy_cache, tmp_path / "run"))
    assert result.exit_code == 2
    assert f"another training run holds its lock {tmp_path / 'run.lock'} (pid {os.getpid()}" in result.output
