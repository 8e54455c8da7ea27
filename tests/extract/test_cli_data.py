"""`adaptor extract demo-data` and `adaptor extract manifest`, end to end through the Typer app."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from adaptor_vlp.cache_schema.manifest import Split, read_exclusions, read_manifest
from adaptor_vlp.extract.cli import app

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
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root),
                                 "--out", str(tmp_path)])
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


def test_the_mit_lcp_section_parser_is_chosen_and_recorded(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root), "--out", str(tmp_path),
                                 "--section-parser", "mit-lcp"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "mimic-cxr")
    assert manifest.options["section_parser"] == "mit-lcp" and manifest.options["min_words"] is None
    ours = read_manifest(_manifest_folder(runner, demo_root, tmp_path / "ours"))
    assert "section_parser" not in ours.options
    assert [row.dicom_id for row in manifest.rows] == [row.dicom_id for row in ours.rows]
    assert {row.report_issue for row in manifest.rows} >= {"empty report", "missing report file"}


def _manifest_folder(cli, root, out):
    result = cli.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(root), "--out", str(out)])
    assert result.exit_code == 0
    return out / "mimic-cxr"


def test_separate_reports_root_is_used(demo_root, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root),
                                 "--reports", str(reports), "--out", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "cache" / "mimic-cxr")
    assert {row.report_issue for row in manifest.rows} == {"missing report file"}
    assert manifest.reports_root == reports.resolve()


def test_manifest_on_a_folder_without_tables_fails_clearly(tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(tmp_path),
                                 "--out", str(tmp_path / "cache")])
    assert result.exit_code == 2
    assert "mimic-cxr-2.0.0-split.csv.gz" in result.output
    assert not (tmp_path / "cache").exists()


def test_unknown_dataset_is_rejected(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "padchest", "--root", str(demo_root), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "mimic-cxr" in result.output and "siim" in result.output


def test_demo_data_refuses_a_used_folder_and_too_few_subjects(demo_root, tmp_path):
    result = runner.invoke(app, ["demo-data", str(demo_root), "--subjects", "3"])
    assert result.exit_code == 2
    assert "not empty" in result.output
    result = runner.invoke(app, ["demo-data", str(tmp_path / "new"), "--subjects", "2"])
    assert result.exit_code == 2
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def siim_demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-siim") / "siim"
    result = runner.invoke(app, ["demo-downstream", str(root), "--images", "14", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "image listed in train-rle.csv but missing on disk" in result.output
    assert f"--dataset siim --root {root}" in result.output
    return root


def test_demo_downstream_then_siim_manifest_has_masks(siim_demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "siim", "--root", str(siim_demo_root), "--out", str(tmp_path),
                                 "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "siim")
    assert manifest.label_names == ("Pneumothorax",) and manifest.has_masks
    assert manifest.options["fractions"] == {"train": 0.6, "validate": 0.2, "test": 0.2}
    assert manifest.options["seed"] == 4
    positives = sum(row.labels["Pneumothorax"] == 1.0 for row in manifest.rows)
    assert f"positive labels: Pneumothorax {positives}" in result.output
    assert f"segmentation targets: {len(manifest.rows)} images" in result.output
    assert "1  image file missing" in result.output


def test_reader_options_reach_the_downstream_reader(tmp_path):
    root = tmp_path / "covidx"
    for folder, prefix in (("train", "t"), ("test", "s")):
        (root / folder).mkdir(parents=True)
        lines = [f"{prefix}{index} {prefix}{index}.png {('normal', 'pneumonia', 'COVID-19')[index % 3]} cohen"
                 for index in range(6)]
        (root / f"{folder}.txt").write_text("\n".join(lines) + "\n")
        for index in range(6):
            (root / folder / f"{prefix}{index}.png").write_bytes(b"png bytes are not read here")
    result = runner.invoke(app, ["manifest", "--dataset", "covidx", "--root", str(root), "--out", str(tmp_path / "c"),
                                 "--val-fraction", "0.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "c" / "covidx")
    assert manifest.options["validation"] == {"val_fraction": 0.5, "seed": 3}
    assert manifest.split_counts() == {"train": 3, "validate": 3, "test": 6}
    assert manifest.label_names == ("normal", "pneumonia", "COVID-19")


@pytest.mark.parametrize(
    ("dataset", "option", "value"),
    [("siim", "--uncertain", "ones"), ("covidx", "--test-fraction", "0.2"), ("mimic-cxr", "--seed", "1"),
     ("chexpert", "--views", "PA"), ("rsna", "--section-parser", "mit-lcp")],
)
def test_options_for_another_dataset_are_refused(siim_demo_root, tmp_path, dataset, option, value):
    result = runner.invoke(app, ["manifest", "--dataset", dataset, "--root", str(siim_demo_root),
                                 "--out", str(tmp_path), option, value])
    assert result.exit_code == 2
    assert f"{option} does not apply to --dataset {dataset}" in result.output
    assert not (tmp_path / dataset).exists()


def test_demo_downstream_refuses_a_used_folder(siim_demo_root):
    result = runner.invoke(app, ["demo-downstream", str(siim_demo_root)])
    assert result.exit_code == 2
    assert "not empty" in result.output


def test_the_summary_names_the_list_of_excluded_images(demo_root, tmp_path):
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(demo_root),
                                 "--out", str(tmp_path)])
    listed = tmp_path / "mimic-cxr" / "excluded.csv"
    assert f"images (each listed with ids, path and reason in {listed}):" in result.output
    excluded = read_exclusions(tmp_path / "mimic-cxr")
    [missing] = [e for e in excluded if e.reason == "image file missing"]
    assert missing.dicom_id and missing.study_id and missing.subject_id
    assert missing.image_path.endswith(f"{missing.dicom_id}.jpg") and not (demo_root / missing.image_path).exists()
    description = json.loads((tmp_path / "mimic-cxr" / "manifest.json").read_text())
    assert description["excluded_file"] == "excluded.csv" and sum(description["exclusions"].values()) == len(excluded)


def test_failing_reports_are_named_by_study_and_their_text_never_printed(demo_root, tmp_path):
    root = tmp_path / "mimic"
    shutil.copytree(demo_root, root)
    short, unreadable = sorted(root.glob("files/p*/p*/s*.txt"))[:2]
    short.write_text("FINDINGS: SECRETWORD lungs.\n")
    unreadable.unlink()
    unreadable.mkdir()  # a folder where the report should be: it cannot be read
    result = runner.invoke(app, ["manifest", "--dataset", "mimic-cxr", "--root", str(root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "too short (2 words)" in result.output and "report file unreadable (IsADirectoryError)" in result.output
    folder = tmp_path / "mimic-cxr"
    for text in (result.output, (folder / "manifest.json").read_text(), (folder / "excluded.csv").read_text()):
        assert "SECRETWORD" not in text
    issues = {row.study_id: row.report_issue for row in read_manifest(folder).rows}
    assert issues[short.stem[1:]] == "too short (2 words)"

    texts = runner.invoke(app, ["texts", "--cache", str(tmp_path), "--backbone", "tiny-bert", "--device", "cpu"])
    assert texts.exit_code == 0, texts.output
    assert "report unusable: too short" in texts.output and "SECRETWORD" not in texts.output
    store = folder / "text" / "tiny-bert.zarr"
    assert not any(b"SECRETWORD" in path.read_bytes() for path in store.rglob("*") if path.is_file())


@pytest.mark.parametrize("dataset, images, table", [("rsna", 14, "stage_2_train_labels.csv"),
                                                    ("covidx", 24, "train_COVIDx9A.txt")])
def test_demo_downstream_writes_each_layout_then_its_manifest_reads(tmp_path, dataset, images, table):
    root = tmp_path / dataset
    result = runner.invoke(app, ["demo-downstream", str(root), "--dataset", dataset, "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert (root / table).is_file() and f"--dataset {dataset} --root {root}" in result.output
    result = runner.invoke(app, ["manifest", "--dataset", dataset, "--root", str(root), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output


def test_demo_downstream_refuses_too_few_images_naming_the_minimum(tmp_path):
    result = runner.invoke(app, ["demo-downstream", str(tmp_path / "c"), "--dataset", "covidx", "--images", "5"])
    assert result.exit_code == 2 and "at least 24 images" in result.output
