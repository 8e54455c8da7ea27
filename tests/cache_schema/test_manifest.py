"""Manifest CSV + JSON: exact columns, deterministic bytes, hash, round trip and clear errors."""
import csv
import hashlib
import json
from pathlib import Path

import pytest

from adaptor_vlp.cache_schema.manifest import (
    CHEXPERT_LABELS,
    MANIFEST_CSV,
    MANIFEST_JSON,
    Manifest,
    ManifestError,
    ManifestRow,
    Split,
    manifest_sha256,
    read_manifest,
    write_manifest,
)

EXPECTED_COLUMNS = [
    "dicom_id", "study_id", "subject_id", "split", "view", "image_path", "report_text", "report_issue",
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]


def _row(
    dicom: str, study: str, split: Split, text: str = "No acute process.", issue: str = "", **labels
) -> ManifestRow:
    values = {name: None for name in CHEXPERT_LABELS}
    values.update({name.replace("_", " "): value for name, value in labels.items()})
    return ManifestRow(
        dicom_id=dicom, study_id=study, subject_id="10000032", split=split, view="PA",
        image_path=f"files/p10/p10000032/s{study}/{dicom}.jpg", report_text=text, report_issue=issue, labels=values,
    )


@pytest.fixture
def manifest(tmp_path) -> Manifest:
    rows = (
        _row("aaaa", "50000001", Split.TRAIN, Cardiomegaly=1.0, Edema=-1.0, Pneumothorax=0.0),
        _row("bbbb", "50000002", Split.TEST, text='Text with "quotes", commas, and a line\nbreak.', No_Finding=1.0),
        _row("cccc", "50000001", Split.TRAIN, Cardiomegaly=1.0, Edema=-1.0, Pneumothorax=0.0),
        _row("dddd", "50000003", Split.TRAIN, text="", issue="missing report file"),
    )
    return Manifest(
        dataset="mimic-cxr", image_root=tmp_path / "images", reports_root=tmp_path / "reports", rows=rows,
        options={"views": ["PA", "AP"], "min_words": 3},
        exclusions={"image file missing": 2, "view LATERAL not selected": 5},
    )


def test_chexpert_labels_are_the_official_fourteen_in_order():
    assert list(CHEXPERT_LABELS) == EXPECTED_COLUMNS[8:]


def test_csv_has_exactly_the_documented_columns_and_label_spellings(manifest, tmp_path):
    csv_path = write_manifest(manifest, tmp_path / "cache" / "mimic-cxr")
    assert csv_path == tmp_path / "cache" / "mimic-cxr" / MANIFEST_CSV
    with csv_path.open(newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    assert list(records[0]) == EXPECTED_COLUMNS
    assert [records[0][name] for name in ("Cardiomegaly", "Edema", "Pneumothorax", "Fracture")] == [
        "1.0", "-1.0", "0.0", "",
    ]
    assert records[1]["report_text"] == 'Text with "quotes", commas, and a line\nbreak.'
    assert records[0]["image_path"] == "files/p10/p10000032/s50000001/aaaa.jpg"


def test_json_describes_the_manifest_and_hashes_the_csv(manifest, tmp_path):
    folder = tmp_path / "out"
    write_manifest(manifest, folder)
    description = json.loads((folder / MANIFEST_JSON).read_text())
    assert description["dataset"] == "mimic-cxr"
    assert description["image_root"] == str(tmp_path / "images")
    assert description["reports_root"] == str(tmp_path / "reports")
    assert description["options"] == {"views": ["PA", "AP"], "min_words": 3}
    assert description["counts"] == {"train": 3, "validate": 0, "test": 1}
    assert description["exclusions"] == {"image file missing": 2, "view LATERAL not selected": 5}
    assert description["report_issues"] == {"missing report file": 1}
    expected_sha = hashlib.sha256((folder / MANIFEST_CSV).read_bytes()).hexdigest()
    assert description["manifest_sha256"] == expected_sha == manifest_sha256(folder)


def test_same_manifest_gives_the_same_bytes(manifest, tmp_path):
    write_manifest(manifest, tmp_path / "first")
    write_manifest(manifest, tmp_path / "second")
    for name in (MANIFEST_CSV, MANIFEST_JSON):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_different_rows_give_a_different_hash(manifest, tmp_path):
    write_manifest(manifest, tmp_path / "first")
    changed = Manifest(manifest.dataset, manifest.image_root, manifest.reports_root, manifest.rows[:-1])
    write_manifest(changed, tmp_path / "second")
    assert manifest_sha256(tmp_path / "first") != manifest_sha256(tmp_path / "second")


def test_round_trip_restores_every_field(manifest, tmp_path):
    write_manifest(manifest, tmp_path / "out")
    restored = read_manifest(tmp_path / "out")
    assert restored == manifest
    assert restored.rows[0].labels["Edema"] == -1.0
    assert restored.rows[0].split is Split.TRAIN


def test_studies_are_unique_in_first_appearance_order(manifest):
    assert [row.dicom_id for row in manifest.studies()] == ["aaaa", "bbbb", "dddd"]


def test_report_usable_follows_the_issue(manifest):
    assert [row.report_usable for row in manifest.rows] == [True, True, True, False]


def test_reading_a_folder_without_a_manifest_names_the_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest\.json not found.*adaptor extract manifest"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match=r"manifest\.csv not found"):
        manifest_sha256(tmp_path)


def test_edited_csv_is_refused(manifest, tmp_path):
    write_manifest(manifest, tmp_path)
    csv_path = tmp_path / MANIFEST_CSV
    csv_path.write_bytes(csv_path.read_bytes().replace(b"aaaa", b"eeee"))
    with pytest.raises(ManifestError, match=r"manifest\.csv does not match .*manifest\.json"):
        read_manifest(tmp_path)


def _rewrite_csv(folder: Path, text: str) -> None:
    """Replace the CSV and re-sign it in the JSON, as if a buggy writer had produced it."""
    (folder / MANIFEST_CSV).write_text(text, encoding="utf-8")
    description = json.loads((folder / MANIFEST_JSON).read_text())
    description["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (folder / MANIFEST_JSON).write_text(json.dumps(description))


def test_bad_label_value_names_line_and_column(manifest, tmp_path):
    write_manifest(manifest, tmp_path)
    text = (tmp_path / MANIFEST_CSV).read_text()
    _rewrite_csv(tmp_path, text.replace(",-1.0,", ",2.0,", 1))
    with pytest.raises(ManifestError, match=r"line 2 column 'Edema': label value '2.0'"):
        read_manifest(tmp_path)


def test_wrong_header_or_split_is_refused(manifest, tmp_path):
    write_manifest(manifest, tmp_path)
    text = (tmp_path / MANIFEST_CSV).read_text()
    _rewrite_csv(tmp_path, text.replace("dicom_id,", "image_id,", 1))
    with pytest.raises(ManifestError, match="header"):
        read_manifest(tmp_path)
    _rewrite_csv(tmp_path, text.replace(",train,", ",training,", 1))
    with pytest.raises(ManifestError, match=r"line 2: unknown split 'training'"):
        read_manifest(tmp_path)


def test_malformed_json_is_refused(manifest, tmp_path):
    write_manifest(manifest, tmp_path)
    (tmp_path / MANIFEST_JSON).write_text("{not json")
    with pytest.raises(ManifestError, match=r"manifest\.json is not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_JSON).write_text('{"dataset": "x"}')
    with pytest.raises(ManifestError, match="lacks image_root"):
        read_manifest(tmp_path)


def _downstream_manifest(tmp_path, masks: tuple[str, ...]) -> Manifest:
    rows = tuple(
        ManifestRow(
            dicom_id=f"img{index}", study_id=f"img{index}", subject_id=f"p{index}", split=Split.TRAIN, view="",
            image_path=f"images/img{index}.dcm", report_text="", report_issue="no report",
            labels={"Pneumothorax": 1.0 if mask.endswith(":1 2") else 0.0}, mask=mask,
        )
        for index, mask in enumerate(masks)
    )
    return Manifest("siim", tmp_path, tmp_path, rows, label_names=("Pneumothorax",))


def test_label_names_and_mask_column_round_trip(tmp_path):
    manifest = _downstream_manifest(tmp_path, ("rle:4x4:1 2", "rle:4x4:", ""))
    write_manifest(manifest, tmp_path / "out")
    lines = (tmp_path / "out" / MANIFEST_CSV).read_text().splitlines()
    assert lines[0] == ",".join(EXPECTED_COLUMNS[:8] + ["Pneumothorax", "mask"])
    assert lines[1].endswith(",1.0,rle:4x4:1 2") and lines[3].endswith(",0.0,")
    assert json.loads((tmp_path / "out" / MANIFEST_JSON).read_text())["label_names"] == ["Pneumothorax"]
    restored = read_manifest(tmp_path / "out")
    assert restored == manifest and restored.has_masks
    assert [row.mask for row in restored.rows] == ["rle:4x4:1 2", "rle:4x4:", ""]


def test_no_mask_column_without_targets_and_old_json_means_chexpert_labels(manifest, tmp_path):
    write_manifest(manifest, tmp_path)
    assert "mask" not in (tmp_path / MANIFEST_CSV).read_text().splitlines()[0].split(",")
    description = json.loads((tmp_path / MANIFEST_JSON).read_text())
    assert description["label_names"] == list(CHEXPERT_LABELS)
    del description["label_names"]
    (tmp_path / MANIFEST_JSON).write_text(json.dumps(description))
    assert read_manifest(tmp_path).label_names == CHEXPERT_LABELS


def test_bad_target_in_the_csv_names_line_and_column(tmp_path):
    write_manifest(_downstream_manifest(tmp_path, ("rle:4x4:1 2", "rle:4x4:")), tmp_path / "out")
    text = (tmp_path / "out" / MANIFEST_CSV).read_text()
    _rewrite_csv(tmp_path / "out", text.replace("rle:4x4:\n", "rle:4by4:\n"))
    with pytest.raises(ManifestError, match=r"line 3 column 'mask': target 'rle:4by4:' is not of the form"):
        read_manifest(tmp_path / "out")


def test_label_names_must_fit_the_columns_and_the_rows(tmp_path):
    with pytest.raises(ManifestError, match="must be unique, non-empty and differ from the columns"):
        Manifest("x", tmp_path, tmp_path, (), label_names=("split",))
    with pytest.raises(ManifestError, match="must be unique"):
        Manifest("x", tmp_path, tmp_path, (), label_names=("a", "a"))
    manifest = _downstream_manifest(tmp_path, ("",))
    mislabelled = Manifest("siim", tmp_path, tmp_path, manifest.rows, label_names=("Pneumonia",))
    with pytest.raises(ManifestError, match=r"row img0 has label\(s\) \['Pneumothorax'\] that are not among"):
        write_manifest(mislabelled, tmp_path / "out")
