"""`adaptor export` and `adaptor predict embed|zeroshot|retrieve` end to end, in this process."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore
from adaptor_vlp.cli import app
from tests.inference.conftest import DATASET, invoke

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def exported(demo_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-export") / "model"
    invoke("export", demo_run.run, out)
    return out


@pytest.fixture
def images(demo_run, tmp_path) -> Path:
    """Three demo radiographs and one broken file in a folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    for row in demo_run.manifest.rows[:3]:
        (folder / Path(row.image_path).name).write_bytes((demo_run.tree / row.image_path).read_bytes())
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "zz-broken.png")
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n")
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_no_report_text(demo_run, *outputs: str) -> None:
    reports = [text for text in demo_run.report_texts() if len(text) > 20]
    assert reports
    for output in outputs:
        assert not any(text in output or text[:40] in output for text in reports)


def test_zeroshot_writes_a_score_per_label_and_lists_the_unreadable_file(demo_run, exported, images, tmp_path):
    result = runner.invoke(app, ["predict", "zeroshot", "--model", str(exported), "--images", str(images),
                                 "--out", str(tmp_path / "scores.csv"), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "scores.csv")
    assert len(rows) == 3 and "zz-broken.png" not in " ".join(row["image"] for row in rows)
    assert list(rows[0])[:3] == ["image", "Atelectasis", "Cardiomegaly"] and len(rows[0]) == 15
    assert all(0.0 < float(value) < 1.0 for row in rows for name, value in row.items() if name != "image")
    assert "unreadable:" in result.output and "zz-broken.png" in result.output
    assert "Pleural Effusion" in result.output and "scored 3 images (1 unreadable)" in result.output


def test_zeroshot_takes_a_prompts_file(demo_run, exported, images, tmp_path):
    prompts = tmp_path / "prompts.toml"
    prompts.write_text('[classes.normal]\npositive = "normal chest"\n[classes.abnormal]\npositive = "abnormal"\n')

    invoke("predict", "zeroshot", "--model", exported, "--images", images, "--out", tmp_path / "scores.csv",
           "--prompts", prompts, "--device", "cpu", "--show", "0")

    rows = _rows(tmp_path / "scores.csv")
    assert list(rows[0]) == ["image", "normal", "abnormal"]
    assert all(abs(float(row["normal"]) + float(row["abnormal"]) - 1.0) < 1e-3 for row in rows)


def test_embed_writes_a_cache_store_with_the_unreadable_row_recorded(demo_run, exported, images, tmp_path):
    invoke("predict", "embed", "--model", exported, "--images", images, "--out", tmp_path / "new.zarr",
           "--device", "cpu")

    store = CacheStore.open(tmp_path / "new.zarr")
    assert store.n_rows == 4 and store.valid.tolist() == [True, True, True, False]
    assert [failure.reason for failure in store.failures()][0].startswith("unreadable image")
    np.testing.assert_allclose(np.linalg.norm(store.read(ArrayName.EMBEDDING)[:3].astype(np.float64), axis=1), 1.0,
                               rtol=2e-3)


def test_embed_writes_npy_and_ids(demo_run, exported, images, tmp_path):
    invoke("predict", "embed", "--model", demo_run.run, "--images", images, "--out", tmp_path / "new.npy",
           "--device", "cpu")

    matrix = np.load(tmp_path / "new.npy", allow_pickle=False)
    ids = _rows(tmp_path / "new.ids.csv")
    assert matrix.shape[0] == len(ids) == 3 and matrix.dtype == np.float32


def test_retrieve_names_reports_by_id_and_never_prints_their_text(demo_run, exported, images, tmp_path):
    result = runner.invoke(app, ["predict", "retrieve", "--model", str(exported), "--images", str(images),
                                 "--cache", str(demo_run.cache), "--dataset", DATASET, "--k", "3",
                                 "--out", str(tmp_path / "reports.csv"), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "reports.csv")
    assert len(rows) == 9 and [row["rank"] for row in rows[:3]] == ["1", "2", "3"]
    study_ids = {row.study_id for row in demo_run.manifest.rows}
    assert {row["report_id"] for row in rows} <= study_ids
    scores = [float(row["cosine"]) for row in rows[:3]]
    assert scores == sorted(scores, reverse=True)
    _assert_no_report_text(demo_run, result.output, (tmp_path / "reports.csv").read_text())


def test_no_command_prints_or_writes_report_text(demo_run, exported, images, tmp_path):
    outputs = []
    for command in (["zeroshot", "--out", str(tmp_path / "s.csv")], ["embed", "--out", str(tmp_path / "e.npy")]):
        result = runner.invoke(app, ["predict", *command, "--model", str(exported), "--images", str(images),
                                     "--device", "cpu"])
        outputs.append(result.output)
    written = [path.read_bytes().decode("latin-1") for path in tmp_path.iterdir() if path.is_file()]
    _assert_no_report_text(demo_run, *outputs, *written, *(path.read_text() for path in exported.iterdir()
                                                           if path.suffix != ".safetensors"))


def test_bad_inputs_exit_with_one_line_naming_them(demo_run, exported, images, tmp_path):
    wrong_suffix = runner.invoke(app, ["predict", "embed", "--model", str(exported), "--images", str(images),
                                       "--out", str(tmp_path / "x.csv")])
    no_model = runner.invoke(app, ["predict", "zeroshot", "--model", str(tmp_path), "--images", str(images),
                                   "--out", str(tmp_path / "s.csv")])
    no_prompts = runner.invoke(app, ["predict", "zeroshot", "--model", str(exported), "--images", str(images),
                                     "--out", str(tmp_path / "s.csv"), "--prompts", str(tmp_path / "none.toml")])

    assert wrong_suffix.exit_code == 2 and ".zarr" in wrong_suffix.output
    assert no_model.exit_code == 2 and "neither an exported model" in no_model.output
    assert no_prompts.exit_code == 2 and "prompts file not found" in no_prompts.output
    assert "Traceback" not in wrong_suffix.output + no_model.output + no_prompts.output


def test_export_of_a_folder_of_runs_takes_the_best(demo_run, tmp_path):
    output = invoke("export", demo_run.run.parent, tmp_path / "model")

    assert f"exported {demo_run.run.name}" in output and (tmp_path / "model" / "config.json").is_file()


def test_zeroshot_on_nothing_readable_writes_an_empty_table(exported, tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom")

    output = invoke("predict", "zeroshot", "--model", exported, "--images", broken, "--out", tmp_path / "s.csv",
                    "--device", "cpu")

    assert "scored 0 images (1 unreadable)" in output and _rows(tmp_path / "s.csv") == []
