"""`adaptor study` end to end: a bad spec exits 2 naming the key; plan --json; run's exit code says whether all
is done."""
import json

import pytest
from typer.testing import CliRunner

from adaptor_vlp.cli import app
from tests.study.conftest import write_spec

runner = CliRunner()


def test_a_spec_error_is_one_line_and_exit_code_2(demo_trees, tmp_path):
    spec = write_spec(tmp_path, demo_trees)
    spec.write_text(spec.read_text().replace('metric = "auroc"', 'metric = "dice-all"'))
    for command in ("plan", "run", "report"):
        result = runner.invoke(app, ["study", command, str(spec)])
        assert result.exit_code == 2, result.output
        assert "tasks.rsna-classification.metric: 'dice-all' does not fit a classify task" in result.output
        assert "Traceback" not in result.output


def test_a_bad_scheduler_is_refused_before_anything_runs(demo_trees, tmp_path):
    result = runner.invoke(app, ["study", "run", str(write_spec(tmp_path, demo_trees)), "--scheduler", "local:x"])
    assert result.exit_code == 2 and "--scheduler 'local:x'" in result.output
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_plan_json_of_a_finished_study_shows_every_step_done(finished_study):
    result = runner.invoke(app, ["study", "plan", str(finished_study.spec), "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.output)
    assert {step["status"] for step in steps} == {"done"}
    assert {step["kind"] for step in steps} == {"manifest", "extract", "train", "head"}
    assert "study tiny:" in finished_study.output and "next: adaptor study report" in finished_study.output


def test_run_exits_1_when_a_step_cannot_run(demo_trees, tmp_path):
    spec = write_spec(tmp_path, demo_trees, tasks={}, image=("no-such-backbone",), extra="""
[tasks.only]
dataset = "rsna"
kind = "classify"
metric = "auroc"
""")
    result = runner.invoke(app, ["study", "run", str(spec)])
    assert result.exit_code == 1, result.output
    assert "cannot run  extract image no-such-backbone on mimic-cxr: unknown backbone 'no-such-backbone'" \
           in result.output
