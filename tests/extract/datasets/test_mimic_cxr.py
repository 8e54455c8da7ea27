"""The MIMIC-CXR-JPG reader on small trees in the real PhysioNet layout, hand-built and generated."""
import csv
import gzip
import shutil
from pathlib import Path

import pytest

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, MANIFEST_CSV, Split, read_exclusions, write_manifest
from adaptor_vlp.extract.datasets.mimic_cxr import (
    CHEXPERT_COLUMNS,
    IMAGE_MISSING,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    MimicLayoutError,
    SectionParser,
    image_relpath,
    read_mimic_cxr,
    report_relpath,
)
from adaptor_vlp.extract.demo import Fault, write_demo_dataset
from tests.extract.conftest import resave_like_a_spreadsheet

# Report text as MIMIC-CXR writes it: the trailing spaces are data.
FULL_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough
 
 FINDINGS: 
 
 Moderate right pleural effusion.  No pneumothorax.
 
 IMPRESSION: 
 
 Right pleural effusion.
"""  # noqa: W291, W293

# (dicom_id, subject_id, study_id, ViewPosition, split or None when absent from the split table, image on disk)
IMAGES = [
    ("d1", "10000032", "50414267", "PA", "train", True),
    ("d2", "10000032", "50414267", "LATERAL", "train", True),
    ("d3", "10000032", "50414267", "LL", "train", True),
    ("d4", "10000032", "53189527", "AP", "train", False),
    ("d5", "10000032", "53189527", "AP", "train", True),
    ("d6", "10000764", "57375967", "PA", "validate", True),
    ("d7", "10000898", "58000001", "AP", "test", True),
    ("d8", "10000898", "58000001", "", "test", True),
    ("d9", "10000898", "59000001", "PA", None, True),
]
REPORTS = {  # study -> report text; 58000001 has no report file
    "50414267": FULL_REPORT,
    "53189527": " IMPRESSION:  Endotracheal tube in standard position.\n",
    "57375967": "",
    "59000001": FULL_REPORT,
}
LABELS = {
    "50414267": {"Pleural Effusion": "1.0", "Pneumothorax": "0.0"},
    "53189527": {"Support Devices": "1.0", "No Finding": "-1.0"},
}


def _write_table(path: Path, columns, rows, gz: bool) -> None:
    target = path.with_name(path.name + (".gz" if gz else ""))
    opener = gzip.open if gz else open
    with opener(target, "wt", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)


def _build_tree(root: Path, gz: bool = True, reports_root: Path | None = None) -> Path:
    reports_root = reports_root or root
    metadata, splits = [], []
    for dicom, subject, study, view, split, on_disk in IMAGES:
        metadata.append(
            [dicom, subject, study, "CHEST", view, "3056", "2544", "21800506", "213014.531", "CHEST", "", "Erect"]
        )
        if split is not None:
            splits.append([dicom, study, subject, split])
        image = root / image_relpath(subject, study, dicom)
        image.parent.mkdir(parents=True, exist_ok=True)
        if on_disk:
            image.write_bytes(b"\xff\xd8 not decoded by the reader")
    for _dicom, subject, study, *_ in IMAGES:
        if study in REPORTS:
            report = reports_root / report_relpath(subject, study)
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(REPORTS[study])
    labels = [[subject, study] + [LABELS[study].get(name, "") for name in CHEXPERT_LABELS]
              for study, subject in (("50414267", "10000032"), ("53189527", "10000032"))]
    _write_table(root / "mimic-cxr-2.0.0-metadata.csv", METADATA_COLUMNS, metadata, gz)
    _write_table(root / "mimic-cxr-2.0.0-split.csv", SPLIT_COLUMNS, splits, gz)
    _write_table(root / "mimic-cxr-2.0.0-chexpert.csv", CHEXPERT_COLUMNS, labels, gz)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return _build_tree(tmp_path / "mimic-cxr-jpg")


def test_one_row_per_kept_frontal_image_in_metadata_order(tree):
    manifest = read_mimic_cxr(tree)
    assert [row.dicom_id for row in manifest.rows] == ["d1", "d5", "d6", "d7"]
    assert [row.split for row in manifest.rows] == [Split.TRAIN, Split.TRAIN, Split.VALIDATE, Split.TEST]
    assert [row.view for row in manifest.rows] == ["PA", "AP", "PA", "AP"]
    first = manifest.rows[0]
    assert (first.subject_id, first.study_id) == ("10000032", "50414267")
    assert first.image_path == "files/p10/p10000032/s50414267/d1.jpg"
    assert all((tree / row.image_path).is_file() for row in manifest.rows)
    assert manifest.dataset == "mimic-cxr"
    assert manifest.image_root == manifest.reports_root == tree


def test_left_out_images_are_counted_by_reason(tree):
    assert read_mimic_cxr(tree).exclusions == {
        "image file missing": 1,
        "no view position": 1,
        "not in the official split": 1,
        "view LATERAL not selected": 1,
        "view LL not selected": 1,
    }


def test_report_text_and_issues_are_per_study(tree):
    rows = {row.dicom_id: row for row in read_mimic_cxr(tree).rows}
    assert rows["d1"].report_text == "Right pleural effusion. Moderate right pleural effusion. No pneumothorax."
    assert rows["d1"].report_usable
    assert rows["d5"].report_text == "Endotracheal tube in standard position."
    assert rows["d5"].report_usable
    assert (rows["d6"].report_text, rows["d6"].report_issue) == ("", "empty report")
    assert (rows["d7"].report_text, rows["d7"].report_issue) == ("", "missing report file")


def test_labels_come_from_the_chexpert_table_by_study(tree):
    rows = {row.dicom_id: row for row in read_mimic_cxr(tree).rows}
    assert rows["d1"].labels["Pleural Effusion"] == 1.0
    assert rows["d1"].labels["Pneumothorax"] == 0.0
    assert rows["d1"].labels["Edema"] is None
    assert rows["d5"].labels["No Finding"] == -1.0
    assert set(rows["d6"].labels) == set(CHEXPERT_LABELS)
    assert all(value is None for value in rows["d6"].labels.values())


def test_plain_and_gzip_tables_read_the_same(tmp_path):
    from_gzip = read_mimic_cxr(_build_tree(tmp_path / "gz", gz=True))
    from_plain = read_mimic_cxr(_build_tree(tmp_path / "plain", gz=False))
    assert from_plain.rows == from_gzip.rows
    assert from_plain.exclusions == from_gzip.exclusions


def test_reports_under_a_separate_root(tmp_path):
    root, reports = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr-reports"
    _build_tree(root, reports_root=reports)
    manifest = read_mimic_cxr(root, reports_root=reports)
    assert manifest.reports_root == reports
    assert [row.report_issue for row in manifest.rows] == ["", "", "empty report", "missing report file"]
    assert {row.report_issue for row in read_mimic_cxr(root).rows} == {"missing report file"}


def test_merging_validate_and_test(tree):
    manifest = read_mimic_cxr(tree, merge_validate_test=True)
    assert [row.split for row in manifest.rows] == [Split.TRAIN, Split.TRAIN, Split.VALIDATE, Split.VALIDATE]
    assert manifest.options["merge_validate_test"] is True


def test_views_are_configurable(tree):
    manifest = read_mimic_cxr(tree, views=["lateral", " LL "])
    assert [row.dicom_id for row in manifest.rows] == ["d2", "d3"]
    assert manifest.options["views"] == ["LATERAL", "LL"]
    assert manifest.exclusions["view PA not selected"] == 3
    with pytest.raises(ValueError, match="no views"):
        read_mimic_cxr(tree, views=[" "])


def test_reader_options_are_recorded(tree):
    options = read_mimic_cxr(tree, sections=["findings"], min_words=5).options
    assert options == {"views": ["PA", "AP"], "merge_validate_test": False, "sections": ["findings"], "min_words": 5}


def test_the_mit_lcp_parser_gives_impression_space_findings_and_records_itself(tree):
    manifest = read_mimic_cxr(tree, section_parser=SectionParser.MIT_LCP)
    rows = {row.dicom_id: row for row in manifest.rows}
    assert rows["d1"].report_text == "Right pleural effusion. Moderate right pleural effusion. No pneumothorax."
    assert (rows["d5"].report_text, rows["d5"].report_issue) == ("", "no IMPRESSION or FINDINGS section (MIT-LCP's "
                                                                     "parser)"), "a header on the first line"
    assert (rows["d6"].report_text, rows["d6"].report_issue) == ("", "empty report")
    assert manifest.options["section_parser"] == "mit-lcp"


def test_same_tree_gives_the_same_manifest_bytes(tree, tmp_path):
    write_manifest(read_mimic_cxr(tree), tmp_path / "a")
    write_manifest(read_mimic_cxr(tree), tmp_path / "b")
    assert (tmp_path / "a" / MANIFEST_CSV).read_bytes() == (tmp_path / "b" / MANIFEST_CSV).read_bytes()


@pytest.mark.parametrize("table", ["metadata", "split", "chexpert"])
def test_missing_table_is_named(tree, table):
    (tree / f"mimic-cxr-2.0.0-{table}.csv.gz").unlink()
    with pytest.raises(
        MimicLayoutError, match=f"mimic-cxr-2.0.0-{table}.csv.gz nor .*mimic-cxr-2.0.0-{table}.csv exists"
    ):
        read_mimic_cxr(tree)


def test_missing_column_is_named(tree):
    _write_table(
        tree / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id"], [["d1", "10000032", "50414267"]],
        gz=True,
    )
    with pytest.raises(MimicLayoutError, match=r"mimic-cxr-2.0.0-metadata.csv.gz lacks column\(s\) ViewPosition"):
        read_mimic_cxr(tree)


def test_unknown_split_value_names_file_and_line(tree):
    _write_table(tree / "mimic-cxr-2.0.0-split.csv", SPLIT_COLUMNS, [["d1", "50414267", "10000032", "train"],
                                                                    ["d5", "53189527", "10000032", "val"]], gz=True)
    with pytest.raises(MimicLayoutError, match=r"split.csv.gz line 3: split 'val' is not one of"):
        read_mimic_cxr(tree)


def test_bad_label_value_names_file_and_line(tree):
    row = ["10000032", "50414267"] + ["yes"] + [""] * (len(CHEXPERT_LABELS) - 1)
    _write_table(tree / "mimic-cxr-2.0.0-chexpert.csv", CHEXPERT_COLUMNS, [row], gz=True)
    with pytest.raises(MimicLayoutError, match=r"chexpert.csv.gz line 2: label value 'yes'"):
        read_mimic_cxr(tree)


def test_ragged_row_and_non_numeric_ids_are_refused(tree):
    _write_table(tree / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                 [["d1", "10000032", "50414267"]], gz=True)
    with pytest.raises(MimicLayoutError, match="line 2: 3 cells, the header has 4"):
        read_mimic_cxr(tree)
    _write_table(tree / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                 [["d1", "p10000032", "50414267", "PA"]], gz=True)
    with pytest.raises(MimicLayoutError, match="line 2: ids .* are not MIMIC ids"):
        read_mimic_cxr(tree)


def test_corrupt_gzip_is_a_layout_error(tree):
    (tree / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    with pytest.raises(MimicLayoutError, match="split.csv.gz cannot be read as a CSV table"):
        read_mimic_cxr(tree)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "mimic-cxr-jpg"
    return root, write_demo_dataset(root, subjects=6, seed=3)


def test_demo_tree_reads_with_its_planted_faults_accounted_for(demo):
    root, summary = demo
    manifest = read_mimic_cxr(root)
    faults = {planted.fault: planted for planted in summary.faults}
    rows = {row.dicom_id: row for row in manifest.rows}
    assert manifest.exclusions["image file missing"] == 1
    assert manifest.exclusions["no view position"] == 1
    assert (
        manifest.exclusions["view LATERAL not selected"] + manifest.exclusions.get("view LL not selected", 0)
        == summary.lateral_images
    )
    assert len(manifest.rows) == summary.images_listed - sum(manifest.exclusions.values())
    assert faults[Fault.MISSING_IMAGE].dicom_id not in rows
    assert faults[Fault.BLANK_VIEW].dicom_id not in rows
    assert faults[Fault.CORRUPT_IMAGE].dicom_id in rows
    issues = {row.study_id: row.report_issue for row in manifest.rows}
    assert issues[faults[Fault.EMPTY_REPORT].study_id] == "empty report"
    assert issues[faults[Fault.MISSING_REPORT].study_id] == "missing report file"
    assert issues[faults[Fault.IMPRESSION_ONLY].study_id] == ""
    assert {row.split for row in manifest.rows} == set(Split)


def test_demo_tree_with_reports_moved_to_their_own_root(demo, tmp_path):
    root, _ = demo
    images, reports = tmp_path / "jpg", tmp_path / "reports"
    shutil.copytree(root, images)
    for report in images.rglob("*.txt"):
        target = reports / report.relative_to(images)
        target.parent.mkdir(parents=True, exist_ok=True)
        report.rename(target)
    together, apart = read_mimic_cxr(root), read_mimic_cxr(images, reports_root=reports)
    assert [row.report_text for row in apart.rows] == [row.report_text for row in together.rows]
    assert [row.report_issue for row in apart.rows] == [row.report_issue for row in together.rows]


def test_tables_saved_by_a_spreadsheet_read_the_same(tree):
    """A UTF-8 byte-order mark, CRLF line endings and trailing blank lines (and empty rows) change nothing."""
    before = read_mimic_cxr(tree)
    for table in tree.glob("mimic-cxr-2.0.0-*.csv.gz"):
        resave_like_a_spreadsheet(table)
    after = read_mimic_cxr(tree)
    assert after == before and after.excluded == before.excluded


def test_every_left_out_image_is_listed_with_its_ids_path_and_reason(tree, tmp_path):
    manifest = read_mimic_cxr(tree)
    missing = [e for e in manifest.excluded if e.reason == IMAGE_MISSING]
    assert len(missing) == manifest.exclusions[IMAGE_MISSING] == 1
    assert not (tree / missing[0].image_path).exists() and missing[0].image_path.endswith(f"{missing[0].dicom_id}.jpg")
    write_manifest(manifest, tmp_path)
    assert read_exclusions(tmp_path) == manifest.excluded
