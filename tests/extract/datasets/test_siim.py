"""SIIM-ACR reader on a tree built from real train-rle.csv rows: joined components, patients, faults, errors."""
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema.manifest import read_manifest, write_manifest
from adaptor_vlp.cache_schema.targets import decode_mask, decode_siim_rle
from adaptor_vlp.extract.datasets import DownstreamLayoutError, read_siim
from adaptor_vlp.extract.datasets.rows import UNREADABLE_HEADER
from adaptor_vlp.extract.datasets.siim import DUPLICATE_FILE
from tests.extract.datasets.conftest import assert_reads_the_same_once_resaved, write_csv, write_dicom

SINGLE_ROW_IMAGES = 24
MULTI_COMPONENT_IMAGES = 3


@pytest.fixture(scope="module")
def labels(siim_rows) -> list[list[str]]:
    """The real header, the rows of the first 24 single-row images and of three images with several components."""
    per_image: dict[str, list[list[str]]] = {}
    for row in siim_rows[1:]:
        per_image.setdefault(row[0], []).append(row)
    singles = [rows for rows in per_image.values() if len(rows) == 1][:SINGLE_ROW_IMAGES]
    multiples = [rows for rows in per_image.values() if len(rows) > 1][:MULTI_COMPONENT_IMAGES]
    return [siim_rows[0]] + [row for rows in singles + multiples for row in rows]


@pytest.fixture(scope="module")
def image_ids(labels) -> list[str]:
    return list(dict.fromkeys(row[0] for row in labels[1:]))


@pytest.fixture(scope="module")
def tree(labels, image_ids, tmp_path_factory) -> Path:
    """DICOMs nested as <study>/<series>/<ImageId>.dcm. Images 0 and 1 share a patient, image 2 names none;
    image 3 is missing, image 4 has two files, image 5 an unreadable header."""
    root = tmp_path_factory.mktemp("siim")
    write_csv(root / "train-rle.csv", labels)
    folder = root / "dicom-images-train"
    for index, image_id in enumerate(image_ids):
        patient = {0: "shared-patient", 1: "shared-patient", 2: ""}.get(index, f"patient-{index}")
        path = folder / f"1.2.3.{index}" / f"1.2.3.{index}.1" / f"{image_id}.dcm"
        if index != 3:
            write_dicom(path, patient)
        if index == 4:
            write_dicom(folder / "copy" / f"{image_id}.dcm", patient)
        if index == 5:
            path.write_bytes(b"DICM but not really")
    return root


def test_components_are_joined_into_one_mask_per_image(tree, labels, image_ids):
    manifest = read_siim(tree)
    rows = {row.dicom_id: row for row in manifest.rows}
    assert list(rows) == [image for index, image in enumerate(image_ids) if index not in (3, 4, 5)]
    for image_id, row in rows.items():
        components = [line[1] for line in labels[1:] if line[0] == image_id]
        expected = np.logical_or.reduce([decode_siim_rle(encoded, 1024, 1024) for encoded in components])
        assert row.mask.startswith("rle:1024x1024:")
        assert np.array_equal(decode_mask(row.mask), expected)
        assert row.labels["Pneumothorax"] == (1.0 if expected.any() else 0.0)
    assert sum(row.labels["Pneumothorax"] for row in rows.values()) >= MULTI_COMPONENT_IMAGES
    assert rows[image_ids[-1]].image_path == f"dicom-images-train/1.2.3.{len(image_ids) - 1}/" \
                                              f"1.2.3.{len(image_ids) - 1}.1/{image_ids[-1]}.dcm"


def test_patients_come_from_the_dicom_header(tree, image_ids):
    rows = {row.dicom_id: row for row in read_siim(tree, val_fraction=0.3, test_fraction=0.3).rows}
    first, second, anonymous = (rows[image_ids[index]] for index in range(3))
    assert first.subject_id == second.subject_id == "shared-patient"
    assert first.split == second.split
    assert anonymous.subject_id == anonymous.dicom_id
    assert first.view == "PA" and first.study_id == first.dicom_id


def test_faults_are_counted_not_fatal(tree):
    assert read_siim(tree).exclusions == {"image file missing": 1, DUPLICATE_FILE: 1, UNREADABLE_HEADER: 1}


def test_split_is_seeded_and_survives_the_manifest_files(tree, tmp_path):
    manifest = read_siim(tree, seed=5)
    assert sum(manifest.split_counts().values()) == len(manifest.rows)
    assert all(count > 0 for count in manifest.split_counts().values())
    assert read_siim(tree, seed=5) == manifest
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest


def test_a_mask_that_does_not_fit_its_image_names_the_line(tmp_path, labels):
    positive = next(index for index, row in enumerate(labels) if index and row[1].strip() != "-1")
    write_csv(tmp_path / "train-rle.csv", [labels[0], labels[positive]])
    write_dicom(tmp_path / "dicom-images-train" / "a" / f"{labels[positive][0]}.dcm", "p", side=256)
    with pytest.raises(DownstreamLayoutError, match=rf"line 2: ImageId {labels[positive][0]} \(256x256 pixels\)"):
        read_siim(tmp_path)


def test_layout_errors_are_named(tmp_path, labels):
    with pytest.raises(DownstreamLayoutError, match=r"train-rle\.csv not found: point --root at the SIIM-ACR"):
        read_siim(tmp_path)
    write_csv(tmp_path / "train-rle.csv", [labels[0], ["1.2.3", ""]])
    with pytest.raises(DownstreamLayoutError, match=r"dicom-images-train is not a folder"):
        read_siim(tmp_path)
    (tmp_path / "dicom-images-train").mkdir()
    with pytest.raises(DownstreamLayoutError, match=r"line 2: empty ImageId or EncodedPixels \(write -1"):
        read_siim(tmp_path)
    write_csv(tmp_path / "train-rle.csv", [["ImageId", "Mask"]])
    with pytest.raises(DownstreamLayoutError, match=r"lacks column\(s\) EncodedPixels"):
        read_siim(tmp_path)


def test_tables_saved_by_a_spreadsheet_read_the_same(tree, tmp_path):
    """A UTF-8 byte-order mark, CRLF line endings and trailing blank lines (and empty rows) change nothing."""
    assert_reads_the_same_once_resaved(read_siim, tree, tmp_path / "siim", ("train-rle.csv",))
