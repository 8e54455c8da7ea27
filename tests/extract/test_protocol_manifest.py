"""`apply_protocol` on reader trees built from real label rows: the manifest's (image, split) pairs, masks and
subsets equal an independent pandas/sklearn replay of MGCA's code on the same label file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.cache_schema.targets import decode_mask, decode_siim_rle
from adaptor_vlp.extract.datasets import DownstreamLayoutError, read_covidx, read_rsna, read_siim
from adaptor_vlp.extract.protocol_manifest import NOT_DRAWN, apply_protocol
from adaptor_vlp.protocols import MANIFEST_OPTION, HeadTask, load_protocol
from tests.extract.datasets.conftest import real_rows, write_csv, write_dicom

pytestmark = pytest.mark.slow
SIIM_ROWS = 160
RSNA_PATIENTS = 120


@pytest.fixture(scope="module")
def siim_tree(tmp_path_factory) -> Path:
    """The first real rows of train-rle.csv with every row of the images they name; one DICOM per image."""
    siim_rows = real_rows("siim-pneumothorax-train-rle.csv.gz")
    header, body = siim_rows[0], siim_rows[1:]
    images = list(dict.fromkeys(row[0] for row in body[:SIIM_ROWS]))
    root = tmp_path_factory.mktemp("siim-protocol")
    write_csv(root / "train-rle.csv", [header, *(row for row in body if row[0] in set(images))])
    for index, image in enumerate(images):
        write_dicom(root / "dicom-images-train" / f"s{index}" / f"{image}.dcm", f"patient-{index}")
    return root


def _mgca_siim(root: Path) -> dict[str, pd.DataFrame]:
    df = pd.read_csv(root / "train-rle.csv")
    df.columns = ["ImageId", " EncodedPixels"]
    train_df, test_val_df = train_test_split(df, test_size=0.15 * 2, random_state=0)
    test_df, valid_df = train_test_split(test_val_df, test_size=0.5, random_state=0)
    np.random.seed(42)
    positive = train_df[" EncodedPixels"].str.strip() != "-1"
    n_pos = train_df[positive]["ImageId"].nunique()
    negatives = np.random.choice(train_df[~positive]["ImageId"].unique(), size=n_pos, replace=False)
    balanced = pd.concat([train_df[positive], train_df[~positive & train_df["ImageId"].isin(negatives)]])
    return {"train": balanced, "validate": valid_df, "test": test_df, "all_train": train_df}


def test_the_published_siim_manifest_holds_mgcas_image_split_pairs_each_with_its_splits_mask(siim_tree):
    mgca = _mgca_siim(siim_tree)

    manifest = apply_protocol(read_siim(siim_tree), load_protocol("published"), HeadTask.SEGMENT)

    pairs = {(row.dicom_id.split("@")[0], row.split.value) for row in manifest.rows}
    expected = {(image, split) for split in ("train", "validate", "test") for image in mgca[split]["ImageId"]}
    assert pairs == expected
    for row in manifest.rows:
        image = row.dicom_id.split("@")[0]
        cells = mgca[row.split.value][" EncodedPixels"][mgca[row.split.value]["ImageId"] == image]
        union = np.logical_or.reduce([decode_siim_rle(cell, 1024, 1024) for cell in cells])
        assert np.array_equal(decode_mask(row.mask), union)
    several = {image for image, _ in pairs if sum(image == other for other, _ in pairs) > 1}
    assert several, "the sample should hold an image whose rows fall in two splits"
    record = manifest.options[MANIFEST_OPTION]
    assert record["measured"]["images_in_several_splits"] == len(several)
    not_drawn = {exclusion.dicom_id for exclusion in manifest.excluded if exclusion.reason == NOT_DRAWN}
    assert not_drawn == set(mgca["all_train"]["ImageId"]) - set(mgca["train"]["ImageId"]) - several
    assert "fractions" not in manifest.options and record["split"]["rule"] == "mgca-two-stage"


@pytest.fixture(scope="module")
def rsna_tree(tmp_path_factory) -> Path:
    rsna_rows = real_rows("kaggle_stage_2_train_labels.csv.zip")
    header, body = rsna_rows[0], rsna_rows[1:]
    patients = list(dict.fromkeys(row[0] for row in body))[:RSNA_PATIENTS]
    root = tmp_path_factory.mktemp("rsna-protocol")
    write_csv(root / "stage_2_train_labels.csv", [header, *(row for row in body if row[0] in set(patients))])
    for patient in patients:
        write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", patient)
    return root


def test_the_published_rsna_manifest_holds_mgcas_split_and_pandas_subsets(rsna_tree):
    df = pd.read_csv(rsna_tree / "stage_2_train_labels.csv")
    frame = df[["patientId", "Target"]].groupby("patientId").agg(list).reset_index()
    train_df, test_val_df = train_test_split(frame, test_size=0.3, random_state=0)
    test_df, valid_df = train_test_split(test_val_df, test_size=0.5, random_state=0)

    manifest = apply_protocol(read_rsna(rsna_tree), load_protocol("published"), HeadTask.CLASSIFY)

    for split, mgca in ((Split.TRAIN, train_df), (Split.VALIDATE, valid_df), (Split.TEST, test_df)):
        assert {row.dicom_id for row in manifest.rows if row.split is split} == set(mgca["patientId"])
    subsets = manifest.options[MANIFEST_OPTION]["subsets"]["rsna-classification"]
    assert set(subsets["10"]) == set(train_df.sample(frac=0.1, random_state=42)["patientId"])
    assert manifest.options[MANIFEST_OPTION]["tasks"] == ["rsna-classification"]


def test_the_corrected_rsna_manifest_serves_both_tasks_with_one_patient_split(rsna_tree):
    protocol = load_protocol("corrected")
    manifest = apply_protocol(read_rsna(rsna_tree), protocol, HeadTask.CLASSIFY)

    assert manifest.options[MANIFEST_OPTION]["tasks"] == ["rsna-classification", "rsna-segmentation"]
    assert manifest.options[MANIFEST_OPTION]["subsets"] == {}
    assert protocol.cache_dataset("rsna", HeadTask.CLASSIFY) == protocol.cache_dataset("rsna", HeadTask.SEGMENT)
    assert {row.split for row in manifest.rows} == set(Split)
    published = load_protocol("published")
    assert published.cache_dataset("rsna", HeadTask.CLASSIFY) == "rsna-published-classify"


def _covidx_tree(root: Path, classes: tuple[str, str, str]) -> Path:
    for role, count in (("train", 40), ("test", 9)):
        (root / role).mkdir(parents=True)
        lines = []
        for index in range(count):
            name = f"{role}-{index}.png"
            (root / role / name).write_bytes(b"")
            lines.append(f"patient-{index // 2} {name} {classes[index % 3]} source")
        (root / f"{role}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_the_published_covidx_split_is_mgcas_and_a_two_class_list_is_refused_naming_the_files(tmp_path):
    three = _covidx_tree(tmp_path / "three", ("normal", "pneumonia", "COVID-19"))
    two = _covidx_tree(tmp_path / "two", ("negative", "positive", "negative"))
    df = pd.read_csv(three / "train.txt", sep=" ", header=None)
    train_df, valid_df = train_test_split(df, train_size=0.8, random_state=0)

    manifest = apply_protocol(read_covidx(three), load_protocol("published"), HeadTask.CLASSIFY)

    assert {row.dicom_id for row in manifest.rows if row.split is Split.TRAIN} == set(train_df[1])
    assert {row.dicom_id for row in manifest.rows if row.split is Split.VALIDATE} == set(valid_df[1])
    assert manifest.options[MANIFEST_OPTION]["measured"]["patients_in_several_splits"] > 0
    with pytest.raises(DownstreamLayoutError, match=r"two/train.txt.*classes \['negative', 'positive'\].*"
                                                    r"classifies \['normal', 'pneumonia', 'COVID-19'\]"):
        apply_protocol(read_covidx(two), load_protocol("published"), HeadTask.CLASSIFY)
