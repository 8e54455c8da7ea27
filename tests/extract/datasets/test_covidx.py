"""COVIDx reader: both class vocabularies, one-hot labels, val.txt or a patient-wise carve-out, faults and errors."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptor_vlp.cache_schema.manifest import Split, read_manifest, write_manifest
from adaptor_vlp.extract.datasets import DownstreamLayoutError, read_covidx
from adaptor_vlp.extract.datasets.covidx import DUPLICATE_FILE_NAME, NON_ASCII_NAME
from tests.extract.conftest import resave_like_a_spreadsheet

OLD_CLASSES = ("normal", "pneumonia", "COVID-19")
SOURCES = ("cohen", "rsna", "sirm")


def _write_tree(root: Path, files: dict[str, list[str]], missing: tuple[str, ...] = ()) -> None:
    """Label files with the given lines, and a small PNG for every listed image but the `missing` ones."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (root / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        folder = root / name.removesuffix(".txt").split("_")[0]  # train_COVIDx9A.txt lists train/
        for line in lines:
            tokens = line.split()
            file_name = " ".join(tokens[1:-2]) if tokens[-1] in SOURCES else " ".join(tokens[1:-1])
            if file_name and file_name not in missing and file_name.isascii():
                folder.mkdir(exist_ok=True)
                Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / file_name)


def _lines(prefix: str, count: int, classes: tuple[str, ...], images_per_patient: int = 2) -> list[str]:
    return [f"{prefix}{index // images_per_patient} {prefix}-{index}.png {classes[index % len(classes)]} "
            f"{SOURCES[index % 3]}" for index in range(count)]


def test_old_three_class_files_give_one_hot_labels(tmp_path):
    _write_tree(tmp_path, {"train.txt": _lines("t", 30, OLD_CLASSES), "test.txt": _lines("s", 6, OLD_CLASSES)},
                missing=("t-4.png",))
    manifest = read_covidx(tmp_path)
    assert manifest.label_names == OLD_CLASSES
    assert manifest.exclusions == {"image file missing": 1}
    row = next(row for row in manifest.rows if row.dicom_id == "t-2.png")
    assert row.labels == {"normal": 0.0, "pneumonia": 0.0, "COVID-19": 1.0}
    assert (row.subject_id, row.image_path, row.view, row.report_usable) == ("t1", "train/t-2.png", "", False)
    assert [row.split for row in manifest.rows[-6:]] == [Split.TEST] * 6
    assert all(sum(row.labels.values()) == 1.0 for row in manifest.rows)


def test_validation_is_carved_from_train_by_patient_with_a_seed(tmp_path):
    _write_tree(tmp_path, {"train.txt": _lines("t", 40, OLD_CLASSES), "test.txt": _lines("s", 4, OLD_CLASSES)})
    manifest = read_covidx(tmp_path, val_fraction=0.25, seed=2)
    train_rows = [row for row in manifest.rows if row.split is not Split.TEST]
    assert sum(row.split is Split.VALIDATE for row in train_rows) == 10  # 5 of 20 patients, 2 images each
    splits_of = {}
    for row in train_rows:
        splits_of.setdefault(row.subject_id, set()).add(row.split)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert read_covidx(tmp_path, val_fraction=0.25, seed=2) == manifest
    assert manifest.options["validation"] == {"val_fraction": 0.25, "seed": 2}


def test_new_binary_files_with_val_txt(tmp_path):
    classes = ("positive", "negative")
    _write_tree(tmp_path, {"train.txt": _lines("t", 8, classes), "val.txt": _lines("v", 4, classes),
                           "test.txt": _lines("s", 4, classes)})
    manifest = read_covidx(tmp_path)
    assert manifest.label_names == ("negative", "positive")
    assert manifest.split_counts() == {"train": 8, "validate": 4, "test": 4}
    assert manifest.rows[0].labels == {"negative": 0.0, "positive": 1.0}
    assert manifest.rows[8].image_path == "val/v-0.png"
    assert manifest.options["validation"] == "val.txt"
    write_manifest(manifest, tmp_path / "cache")
    assert read_manifest(tmp_path / "cache") == manifest


def test_file_names_with_spaces_lines_without_source_repeats_and_non_ascii(tmp_path):
    train = _lines("t", 6, OLD_CLASSES) + ["p9 scan with spaces.png pneumonia", "p9 t-0.png normal cohen",
                                          "p10 r\u00f6ntgen.png normal cohen"]
    _write_tree(tmp_path, {"train.txt": train, "test.txt": _lines("s", 3, OLD_CLASSES)})
    manifest = read_covidx(tmp_path, val_fraction=0.0)
    spaced = next(row for row in manifest.rows if row.subject_id == "p9")
    assert (spaced.dicom_id, spaced.labels["pneumonia"]) == ("scan with spaces.png", 1.0)
    assert manifest.exclusions == {DUPLICATE_FILE_NAME: 1, NON_ASCII_NAME: 1}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (["p1 a.png normal cohen", "p2 b.png positive cohen"], r"train\.txt line 2: class 'positive' is not one of "
                                                               r"normal, pneumonia, COVID-19"),
        (["p1 a.png tuberculosis cohen"], r"line 1: class 'tuberculosis' is not one of the known classes"),
        (["p1 normal"], r"line 1: 'p1 normal' is not 'patient-id file-name class \[source\]'"),
    ],
)
def test_bad_label_lines_name_the_file_and_line(tmp_path, train, message):
    _write_tree(tmp_path, {"train.txt": train, "test.txt": []})
    with pytest.raises(DownstreamLayoutError, match=message):
        read_covidx(tmp_path)


def test_missing_label_file_or_images_are_named(tmp_path):
    with pytest.raises(DownstreamLayoutError, match=r"no COVIDx train list in .*: looked for train\.txt and "
                                                    r"train_COVIDx\*\.txt.*Point --root at the COVIDx folder"):
        read_covidx(tmp_path)
    (tmp_path / "train.txt").write_text("p1 a.png normal cohen\n")
    (tmp_path / "test.txt").write_text("p2 b.png normal cohen\n")
    with pytest.raises(DownstreamLayoutError, match=r"no usable image among those .*train\.txt lists "
                                                    r"\(2 image file missing\)"):
        read_covidx(tmp_path)


def test_label_files_saved_by_a_spreadsheet_read_the_same(tmp_path):
    """A UTF-8 byte-order mark, CRLF line endings and trailing blank lines change nothing."""
    files = {"train.txt": _lines("t", 30, OLD_CLASSES), "test.txt": _lines("s", 6, OLD_CLASSES)}
    _write_tree(tmp_path / "plain", files, missing=("t-4.png",))
    _write_tree(tmp_path / "saved", files, missing=("t-4.png",))
    for name in files:
        resave_like_a_spreadsheet(tmp_path / "saved" / name)
    before, after = read_covidx(tmp_path / "plain"), read_covidx(tmp_path / "saved")
    assert after.rows == before.rows and after.exclusions == before.exclusions == {"image file missing": 1}
    [missing] = after.excluded
    assert (missing.dicom_id, missing.subject_id, missing.image_path) == ("t-4.png", "t2", "train/t-4.png")


def test_the_v9a_lists_the_paper_reads_are_read_and_recorded(tmp_path):
    _write_tree(tmp_path, {"train_COVIDx9A.txt": _lines("t", 30, OLD_CLASSES),
                           "test_COVIDx9A.txt": _lines("s", 6, OLD_CLASSES)})

    manifest = read_covidx(tmp_path)

    assert manifest.options["label_files"] == {"train": "train_COVIDx9A.txt", "test": "test_COVIDx9A.txt"}
    assert len(manifest.rows) == 36
