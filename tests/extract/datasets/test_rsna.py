"""RSNA Pneumonia reader on a tree built from the real stage-2 label rows: labels, boxes as masks, splits, faults."""
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema.manifest import Split, read_manifest, write_manifest
from adaptor_vlp.cache_schema.targets import decode_mask
from adaptor_vlp.extract.datasets import DownstreamLayoutError, read_rsna
from adaptor_vlp.extract.datasets.rows import UNREADABLE_HEADER
from tests.extract.datasets.conftest import assert_reads_the_same_once_resaved, write_csv, write_dicom

LABEL_ROWS = 60


@pytest.fixture(scope="module")
def labels(rsna_rows) -> list[list[str]]:
    return rsna_rows[: LABEL_ROWS + 1]


@pytest.fixture(scope="module")
def tree(labels, tmp_path_factory) -> Path:
    """The first 60 real label rows; every image written but the first patient's (missing) and the second's
    (corrupt)."""
    root = tmp_path_factory.mktemp("rsna")
    write_csv(root / "stage_2_train_labels.csv", labels)
    patients = list(dict.fromkeys(row[0] for row in labels[1:]))
    for patient in patients[2:]:
        write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", patient, view="AP")
    (root / "stage_2_train_images" / f"{patients[1]}.dcm").write_bytes(b"not a DICOM file")
    return root


def test_one_row_per_image_with_pneumonia_label_and_box_mask(tree, labels):
    manifest = read_rsna(tree)
    patients = list(dict.fromkeys(row[0] for row in labels[1:]))
    assert [row.dicom_id for row in manifest.rows] == patients[2:]
    assert manifest.exclusions == {"image file missing": 1, UNREADABLE_HEADER: 1}
    assert manifest.label_names == ("Pneumonia",)
    for row in manifest.rows:
        boxes = [[float(value) for value in line[1:5]]
                 for line in labels[1:] if line[0] == row.dicom_id and line[5] == "1"]
        expected = np.zeros((1024, 1024), dtype=bool)
        for x, y, width, height in boxes:
            expected[int(y) : int(y + height), int(x) : int(x + width)] = True
        assert row.labels["Pneumonia"] == (1.0 if boxes else 0.0)
        assert row.mask.startswith("boxes:1024x1024:")
        assert np.array_equal(decode_mask(row.mask), expected)
        assert (row.study_id, row.subject_id, row.view) == (row.dicom_id, row.dicom_id, "AP")
        assert row.image_path == f"stage_2_train_images/{row.dicom_id}.dcm"
    assert sum(row.mask.count(";") == 1 for row in manifest.rows) >= 5  # images with two boxes


def test_split_is_seeded_and_about_70_15_15(tree):
    manifest = read_rsna(tree, seed=3)
    counts = manifest.split_counts()
    assert counts == {"train": 30, "validate": 7, "test": 7}  # 44 images: round(0.15 * 44) = 7
    assert read_rsna(tree, seed=3) == manifest
    assert [row.split for row in read_rsna(tree, seed=4).rows] != [row.split for row in manifest.rows]
    custom = read_rsna(tree, val_fraction=0.25, test_fraction=0.25)
    assert custom.split_counts()[Split.TEST.value] == 11
    assert custom.options["fractions"] == {"train": 0.5, "validate": 0.25, "test": 0.25}


def test_manifest_files_keep_the_masks(tree, tmp_path):
    manifest = read_rsna(tree)
    write_manifest(manifest, tmp_path)
    restored = read_manifest(tmp_path)
    assert restored == manifest
    assert (tmp_path / "manifest.csv").read_text().splitlines()[0].endswith(",Pneumonia,mask")


def test_the_whole_real_label_file_parses(rsna_rows, tmp_path):
    write_csv(tmp_path / "stage_2_train_labels.csv", rsna_rows)
    patients = len({row[0] for row in rsna_rows[1:]})
    with pytest.raises(DownstreamLayoutError, match=rf"no usable image .*\({patients} image file missing\)"):
        read_rsna(tmp_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["p1", "", "", "", "", "0"], ["p1", "1", "2", "3", "4", "1"]],
         r"line 3: patientId p1 has Target 1 here and 0"),
        ([["p1", "", "", "", "", "1"]], r"line 2: a Target 1 row needs numbers in x, y, width and height"),
        ([["p1", "1", "2", "0", "4", "1"]], r"line 2: box .* is not a finite box with an area"),
        ([["p1", "", "", "", "", "yes"]], r"line 2: patientId 'p1' with Target 'yes'"),
    ],
)
def test_bad_label_rows_name_the_line(tmp_path, labels, rows, message):
    write_csv(tmp_path / "stage_2_train_labels.csv", [labels[0]] + rows)
    with pytest.raises(DownstreamLayoutError, match=message):
        read_rsna(tmp_path)


def test_missing_table_or_column_is_named(tmp_path, labels):
    with pytest.raises(DownstreamLayoutError, match=r"stage_2_train_labels\.csv not found: point --root at the RSNA"):
        read_rsna(tmp_path)
    write_csv(tmp_path / "stage_2_train_labels.csv", [labels[0][:-1]])
    with pytest.raises(DownstreamLayoutError, match=r"lacks column\(s\) Target"):
        read_rsna(tmp_path)


def test_tables_saved_by_a_spreadsheet_read_the_same(tree, tmp_path):
    """A UTF-8 byte-order mark, CRLF line endings and trailing blank lines (and empty rows) change nothing."""
    assert_reads_the_same_once_resaved(read_rsna, tree, tmp_path / "rsna", ("stage_2_train_labels.csv",))
