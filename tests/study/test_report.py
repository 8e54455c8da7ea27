"""The report: the paper's table shape, published values beside computed cells with the difference, reasons for
every cell without a number, the other methods, plots, and the cost of each step."""
import json
from pathlib import Path

import pytest
from huggingface_hub import constants as hub_constants
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, store_path
from adaptor_vlp.cli import app
from adaptor_vlp.study.log import LogEntry, Outcome, RunLog
from adaptor_vlp.study.plan import head_key, plan_study
from adaptor_vlp.study.report import CellStatus, build_report, render_markdown, report_json, segmentation_input_line
from adaptor_vlp.study.spec import load_spec
from tests.study.conftest import LEFT_OUT_REASON


@pytest.fixture(scope="module")
def reported(finished_study):
    result = CliRunner().invoke(app, ["study", "report", str(finished_study.spec)])
    assert result.exit_code == 0, result.output
    out = load_spec(finished_study.spec).out
    return result.output, (out / "report.md").read_text(), json.loads((out / "report.json").read_text())


def _cell(document, task, row, image, fraction, metric=None):
    table = next(table for table in document["tables"] if table["task"] == task
                 and (metric is None or table["metric"] == metric))
    return next(cell for cell in table["cells"] if (cell["row"], cell["image"], cell["fraction"]) == (row, image,
                                                                                                    fraction))


@pytest.mark.slow
def test_a_computed_cell_has_its_published_value_and_the_difference_beside_it(reported, finished_study):
    printed, markdown, document = reported
    cell = _cell(document, "rsna-classification", "tiny-bert", "tiny-vit", 50.0)
    assert cell["status"] == "computed" and cell["published"] == 50.0
    assert cell["difference"] == pytest.approx(cell["value"] - 50.0)
    assert cell["low"] <= cell["value"] <= cell["high"]
    result = next(load_spec(finished_study.spec).results_dir.glob(
        "rsna-classification/tiny-vit+tiny-bert/rsna/classify-adaptor-linear-50pct-seed0.json"))
    assert cell["value"] == pytest.approx(100 * json.loads(result.read_text())["metrics"]["macro_auroc"]["point"])
    text = f"{cell['value']:.1f} [{cell['low']:.1f}, {cell['high']:.1f}]; pub. 50.0, Δ {cell['difference']:+.1f}"
    assert text in markdown and text in printed
    assert _cell(document, "rsna-classification", "baseline", "tiny-vit", 50.0)["published"] is None
    assert "values made up for this test" in markdown and "a note on the published RSNA values" in markdown


def test_the_tables_have_the_papers_shape(reported):
    _, markdown, document = reported
    assert "| text encoder | tiny-vit 50% | tiny-vit 100% | tiny-resnet 50% | tiny-resnet 100% |" in markdown
    assert "| baseline (raw backbone, no Adaptor) |" in markdown
    titles = [(table["task"], table["metric"]) for table in document["tables"]]
    assert titles == [("rsna-classification", "auroc"), ("covidx-classification", "accuracy"),
                      ("siim-segmentation", "dice-published"), ("siim-segmentation", "dice-positive"),
                      ("rsna-segmentation", "dice-positive")]
    assert "Predicting nothing scores" in markdown and "A constant score (predicting the majority class" in markdown


def test_a_left_out_cell_says_why_and_still_shows_the_published_value(reported):
    _, markdown, document = reported
    cell = _cell(document, "siim-segmentation", "tiny-bert", "tiny-resnet", 50.0, "dice-published")
    assert (cell["status"], cell["value"], cell["published"]) == ("left out", None, 73.1)
    assert cell["reason"] == LEFT_OUT_REASON
    assert "left out (1); pub. 73.1" in markdown and f"1. {LEFT_OUT_REASON}" in markdown


@pytest.mark.slow
def test_the_unet_row_reads_feature_maps_and_says_how_it_differs(reported, finished_study):
    _, markdown, document = reported
    cell = _cell(document, "rsna-segmentation", "tiny-bert", "tiny-resnet", 100.0)
    assert cell["status"] == "computed"
    spec = load_spec(finished_study.spec)
    [result] = spec.results_dir.glob("rsna-segmentation/tiny-resnet+tiny-bert/rsna/segment-adaptor-*-100pct-seed0.json")
    assert json.loads(result.read_text())["details"]["decoder"] == "unet"
    store = CacheStore.open(store_path(spec.cache, "rsna", Modality.IMAGE, "tiny-resnet"))
    assert store.features.feature_maps and not store.has(ArrayName.TOKENS)
    assert "- tiny-resnet: segmented as the paper did, by the published ResNet-AE U-Net" in markdown
    assert "the decoder's widths are the published ones / 8" in markdown


@pytest.mark.slow
def test_other_methods_plots_and_costs(reported, finished_study):
    _, markdown, document = reported
    assert "| Another method (published) | 40.0 | 45.0 | 1,000 |" in markdown
    assert "this study: best Adaptor pair per column" in markdown
    out = load_spec(finished_study.spec).out
    assert sorted(path.name for path in (out / "plots").iterdir()) == [
        f"{task}-data-efficiency.png" for task in ("covidx-classification", "rsna-classification",
                                                   "rsna-segmentation", "siim-segmentation")]
    by_kind = document["cost"]["by_kind"]
    assert by_kind["manifest"] == {"steps": 4, "done": 4, "timed": 3, "seconds": pytest.approx(
        by_kind["manifest"]["seconds"]), "failed_attempts": 0, "failed_seconds": 0.0}
    untimed = [step for step in document["cost"]["steps"] if step["seconds"] is None]
    assert [step["key"] for step in untimed] == [finished_study.done_by_hand]
    assert "| manifest rsna | done | not recorded |" in markdown


@pytest.mark.slow
def test_a_cell_not_computed_says_why_and_is_never_filled(finished_study, tmp_path):
    """One head's result removed and its step logged as failed: its cell reads 'not computed' with the reason."""
    plan = plan_study(load_spec(finished_study.spec).with_paths(out=tmp_path / "out"))
    source_results = load_spec(finished_study.spec).results_dir
    head = next(step for step in plan.head_steps() if step.text == "tiny-bert" and step.vision == "tiny-vit"
                and step.task.name == "rsna-classification" and step.fraction == 50.0)
    RunLog(plan.spec.out).append(LogEntry("test", head.key, "head", Outcome.FAILED, "", 1.0, "something broke"))
    report = build_report(plan)
    table = next(table for table in report.tables if table.task.name == "rsna-classification")
    cell = table.cells[("tiny-bert", "tiny-vit", 50.0)]
    assert (cell.status, cell.value, cell.published) == (CellStatus.NOT_COMPUTED, None, 50.0)
    assert cell.reason == "failed: something broke"
    baseline = table.cells[("baseline", "tiny-vit", 100.0)]
    assert baseline.reason == "not run yet (run `adaptor study run`)"
    train = next(step for step in plan.steps if step.key.startswith("train tiny-resnet+tiny-bert"))
    RunLog(plan.spec.out).append(LogEntry("test", train.key, "train", Outcome.FAILED, "", 1.0, "diverged"))
    cell = build_report(plan).tables[0].cells[("tiny-bert", "tiny-resnet", 100.0)]
    assert cell.reason == f"not run: it needs {train.key}, which failed: diverged"
    assert source_results.is_dir()


def test_a_segmentation_table_says_what_its_decoders_read_and_how_cached_views_differ_from_fresh_draws():
    demo = load_spec(Path(__file__).resolve().parents[2] / "studies" / "demo.toml")
    tasks = {task.name: task for task in demo.tasks}
    line = segmentation_input_line(tasks["siim-segmentation@published"], "siim")
    assert "the whole image resized to 32 px (this study's size; the published runs read 896 px)" in line
    assert "normalised to [-1, 1]" in line
    assert "drew a fresh warp for every image at every epoch, each image here sees at most 2 distinct warps" in line
    assert "published-vit decoder; published-mixed loss, batches of 16, at most 10 epochs, validated every 3" in line
    paper = load_spec(Path(__file__).resolve().parents[2] / "studies" / "paper.toml")
    paper_line = segmentation_input_line({task.name: task for task in paper.tasks}["rsna-segmentation@corrected"],
                                         "rsna")
    assert "resized to 224 px and normalised" in paper_line and "this study's size" not in paper_line


def test_a_row_read_through_another_text_entry_says_so_and_keeps_its_published_values(tmp_path, monkeypatch):
    """The paper's cxrbert row: under the published protocol its heads read the Adaptors of the entry the published
    code embedded (`cxrbert-published-pooler`), beside the published values of that row; under corrected, [CLS]."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no weights anywhere: every cell says why it has no number
    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "paper.toml")
    plan = plan_study(spec.with_paths(cache=tmp_path / "cache", out=tmp_path / "out"))
    report = build_report(plan)
    published, corrected = (next(table for table in report.tables if table.task.name == f"rsna-classification@{name}")
                            for name in ("published", "corrected"))
    assert (published.text_entries, corrected.text_entries) == ({"cxrbert": "cxrbert-published-pooler"}, {})
    assert published.cells[("cxrbert", "dinov2-b", 1.0)].published == 82.3  # the paper's CXR-BERT value
    head = plan.step(head_key(published.task, "dinov2-b", "cxrbert-published-pooler", 1.0, 42))
    assert "train dinov2-b+cxrbert-published-pooler" in head.depends_on
    assert "train dinov2-b+cxrbert" in plan.step(head_key(corrected.task, "dinov2-b", "cxrbert", 1.0, 0)).depends_on
    markdown = render_markdown(report)
    assert "| cxrbert (as cxrbert-published-pooler) |" in markdown
    assert "The cxrbert row reads Adaptors trained on `cxrbert-published-pooler`, the text entry the published " \
           "protocol reads for it" in markdown
    tables = report_json(report)["tables"]
    assert [table["text_entries"] for table in tables if table["task"] == "rsna-classification@published"] == [
        {"cxrbert": "cxrbert-published-pooler"}]
