"""`adaptor extract demo-data` and `adaptor extract manifest`, end to end through the Typer app."""
import json

import pytest
from typer.testing import CliRunner

from extract.cli import app
from extract.manifest import Split, read_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "demo"
    result = runner.invoke(app, ["demo-data", str(root), "--subjects", "5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "planted faults:" in result.output
    assert "corrupt (truncated) JPEG: files/p1" in result.output
    assert f"--root {root}" in result.output
    return root


def test_demo_data_then_manifest_writes_the_cache_manifest(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "mimic-cxr"
    manifest = read_manifest(folder)
    assert manifest.image_root == demo_root.resolve()
    assert f"wrote {folder / 'manifest.csv'}: {len(manifest.rows)} images" in result.output
    for split, count in manifest.split_counts().items():
        assert f"  {split:<9} {count:>7}" in result.output
    assert "1  image file missing" in result.output
    assert "1  no view position" in result.output
    assert "view LATERAL not selected" in result.output
    assert "empty report" in result.output and "missing report file" in result.output
    assert json.loads((folder / "manifest.json").read_text())["options"]["views"] == ["PA", "AP"]


def test_views_and_merge_options_reach_the_reader(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root), "--out", str(tmp_path),
                                 "--views", "LATERAL,LL", "--merge-val-test"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "mimic-cxr")
    assert {row.view for row in manifest.rows} <= {"LATERAL", "LL"}
    assert manifest.rows
    assert Split.TEST not in {row.split for row in manifest.rows}
    assert "view PA not selected" in result.output


def test_separate_reports_root_is_used(demo_root, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root), "--reports", str(reports),
                                 "--out", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "cache" / "mimic-cxr")
    assert {row.report_issue for row in manifest.rows} == {"missing report file"}
    assert manifest.reports_root == reports.resolve()


def test_manifest_on_a_folder_without_tables_fails_clearly(tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(tmp_path), "--out", str(tmp_path / "cache")])
    assert result.exit_code == 2
    assert "mimic-cxr-2.0.0-split.csv.gz" in result.output
    assert not (tmp_path / "cache").exists()


def test_unknown_dataset_is_rejected(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "chexpert", "--root", str(demo_root), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "mimic-cxr" in result.output


def test_demo_data_refuses_a_used_folder_and_too_few_subjects(demo_root, tmp_path):
    result = runner.invoke(app, ["demo-data", str(demo_root), "--subjects", "3"])
    assert result.exit_code == 2
    assert "not empty" in result.output
    result = runner.invoke(app, ["demo-data", str(tmp_path / "new"), "--subjects", "2"])
    assert result.exit_code == 2
    assert not (tmp_path / "new").exists()
