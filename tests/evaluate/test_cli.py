"""`adaptor evaluate ...` end to end on the toy cache: results written, tables printed, bad input exits 2."""
import errno
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptor_vlp import evaluate
from adaptor_vlp.cli import app
from tests.evaluate.conftest import DATASET, IMAGE_PREPROCESSING, PROMPTS, VISION, build_toy_dataset

IMAGE_LIBRARIES = ("PIL", "pydicom", "timm", "cv2")

runner = CliRunner()


def _invoke(*arguments: str):
    return runner.invoke(app, ["evaluate", *[str(argument) for argument in arguments]])


@pytest.fixture(scope="module")
def results(toy, toy_run, tmp_path_factory):
    """A results folder filled by classify, retrieval, zero-shot and segment, and each command's output."""
    out = tmp_path_factory.mktemp("evaluate-results")
    common = ("--cache", toy.cache_dir, "--dataset", DATASET, "--resamples", "20", "--out", out)
    outputs = {
        "classify": _invoke("classify", *common, "--run", toy_run, "--fractions", "10,100", "--head", "mlp"),
        "retrieval": _invoke("retrieval", *common, "--run", toy_run),
        "zeroshot": _invoke("zeroshot", *common, "--run", toy_run, "--prompts-name", PROMPTS),
        "segment": _invoke("segment", *common, "--run", toy_run, "--vision", VISION, "--fractions", "100",
                           "--epochs", "5"),
    }
    return out, outputs


@pytest.mark.slow
def test_each_command_writes_its_results_and_prints_its_table(results):
    out, outputs = results
    for command, result in outputs.items():
        assert result.exit_code == 0, (command, result.output)
    assert "| method | features | 10% | 100% |" in outputs["classify"].output
    assert "| chance |" in outputs["retrieval"].output
    assert "macro AUROC" in outputs["zeroshot"].output
    assert "Dice, positive images only" in outputs["segment"].output
    assert "patch tokens + Adaptor" in outputs["segment"].output
    names = sorted(path.name for path in (out / DATASET).glob("*.json"))
    assert names == sorted([f"classify-{space}-mlp-{pct}pct-seed0.json" for space in ("adaptor", "backbone")
                            for pct in (10, 100)] + ["retrieval-adaptor-cosine-seed0.json",
                                                     "segment-adaptor-decoder-100pct-seed0.json",
                                                     "segment-backbone-decoder-100pct-seed0.json",
                                                     f"zeroshot-adaptor-{PROMPTS}-seed0.json"])


def test_a_result_file_records_provenance_checkpoint_fraction_subset_and_seed(results, toy, toy_run):
    out, _ = results
    document = json.loads((out / DATASET / "classify-adaptor-mlp-10pct-seed0.json").read_text())
    checkpoint = json.loads((toy_run / "best.json").read_text())
    assert document["provenance"]["image"] == toy.image_store.provenance.to_json()
    assert document["adaptor"]["weights_sha256"] == checkpoint["weights_sha256"]
    assert document["adaptor"]["run_dir"] == str(toy_run)
    assert (document["data_pct"], document["seed"]) == (10.0, 0)
    assert document["subset"]["n_chosen"] < document["subset"]["n_available"]
    baseline = json.loads((out / DATASET / "classify-backbone-mlp-10pct-seed0.json").read_text())
    assert baseline["adaptor"] is None
    assert baseline["subset"] == document["subset"]


def test_report_writes_markdown_and_plots_and_prints_the_tables(results):
    out, _ = results
    result = _invoke("report", "--results", out)
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    for title in ("classification", "image-text retrieval", "zero-shot classification", "segmentation",
                  "## Provenance"):
        assert title in report
    assert sorted(path.suffix for path in (out / "plots").iterdir()) == [".png"] * 8  # overlays, Dice per image
    assert "| method | features | 10% | 100% |" in result.output


def test_prompts_writes_the_manifest_and_shows_the_extract_command(tmp_path):
    result = _invoke("prompts", "--cache", tmp_path / "cache", "--name", "chexpert", "--text", "bert")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "prompts-chexpert" / "manifest.csv").is_file()
    assert "adaptor extract texts" in result.output and "--dataset prompts-chexpert --backbone bert" in result.output


def test_results_go_into_the_run_folder_by_default(toy, toy_run):
    result = _invoke("retrieval", "--cache", toy.cache_dir, "--dataset", DATASET, "--run", toy_run,
                     "--resamples", "5")
    assert result.exit_code == 0, result.output
    assert (toy_run / "evaluation" / DATASET / "retrieval-adaptor-cosine-seed0.json").is_file()


def test_a_store_the_adaptor_was_not_trained_on_is_one_line_naming_the_field_and_exit_2(toy_run, tmp_path):
    other = build_toy_dataset(tmp_path / "cache", dataset="other-cxr", with_text=False,
                              preprocessing={**IMAGE_PREPROCESSING, "image_size": 48})
    result = _invoke("classify", "--cache", other.cache_dir, "--dataset", "other-cxr", "--run", toy_run,
                     "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "preprocessing.image_size" in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


@pytest.mark.parametrize("arguments, message", [
    (("classify", "--dataset", "absent", "--vision", VISION, "--out", "x"), "run the extract stage first"),
    (("classify", "--vision", VISION), "--out"),
    (("classify", "--out", "x"), "--vision"),
    (("classify", "--vision", VISION, "--out", "x", "--fractions", "10,abc"), "--fractions"),
    (("classify", "--vision", VISION, "--out", "x", "--fractions", "0"), "(0, 100]"),
    (("report", "--results", "absent"), "no results folder"),
])
def test_bad_input_exits_2_with_a_message(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*arguments)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.slow
def test_head_training_imports_no_image_decoder_or_backbone_library(toy, tmp_path):
    """Imports every evaluate module and runs classify and segment in a fresh interpreter."""
    modules = [f"adaptor_vlp.evaluate.{info.name}" for info in pkgutil.iter_modules(evaluate.__path__)
               if info.name != "__main__"]
    script = textwrap.dedent(f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        import torch
        from typer.testing import CliRunner
        torch.set_num_threads(1)
        from adaptor_vlp.evaluate.cli import app
        common = ["--cache", {str(toy.cache_dir)!r}, "--dataset", {DATASET!r}, "--vision", {VISION!r},
                  "--resamples", "5", "--fractions", "100", "--out", {str(tmp_path / "out")!r}]
        for command in (["classify", "--head", "mlp"], ["segment", "--epochs", "2"]):
            result = CliRunner().invoke(app, command + common)
            assert result.exit_code == 0, result.output
        print(sorted(name for name in {IMAGE_LIBRARIES!r} if name in sys.modules))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_a_full_disk_while_writing_results_says_what_was_kept(toy, toy_run, tmp_path, monkeypatch):
    real_write_bytes = Path.write_bytes
    written: list[str] = []

    def disk_full_at_the_second_result(self: Path, data: bytes) -> int:
        if self.name.endswith(".tmp") and ".json." in self.name:
            written.append(self.name)
            if len(written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_at_the_second_result)
    result = _invoke("classify", "--cache", toy.cache_dir, "--dataset", DATASET, "--resamples", "5", "--out",
                     tmp_path, "--run", toy_run, "--fractions", "100", "--space", "backbone", "--space", "adaptor")
    assert result.exit_code == 1 and "Traceback" not in result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"error: cannot write {tmp_path / DATASET}/") and "no space left on the device" in message
    assert f"1 of 2 result files of this command were written to {tmp_path} and are kept" in message
    assert len(list((tmp_path / DATASET).glob("*.json"))) == 1 and not list((tmp_path / DATASET).glob(".*"))


def test_classify_by_a_protocol_refuses_a_manifest_split_otherwise_and_an_unknown_protocol(toy, tmp_path):
    common = ["classify", "--cache", toy.cache_dir, "--dataset", DATASET, "--vision", VISION, "--out", tmp_path]

    other_split = _invoke(*common, "--protocol", "published")
    unknown = _invoke(*common, "--protocol", "paper")

    assert other_split.exit_code == 2
    assert "no classify task for dataset 'toy-cxr'" in other_split.output
    assert unknown.exit_code == 2 and "unknown protocol 'paper'" in unknown.output
    assert "Traceback" not in other_split.output + unknown.output
