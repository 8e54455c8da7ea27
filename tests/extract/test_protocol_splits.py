"""The published splits and subsets equal an independent pandas/sklearn replay of MGCA's code on the real label files.

The real RSNA (30,227 rows, 26,684 patients) and SIIM (12,047 images) label files ship inside torchxrayvision
and are read in place. The replay below follows MGCA's preprocess scripts and datasets line by line on pandas
frames; `protocol_split` works on positions and shares none of its code.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets import DownstreamLayoutError
from adaptor_vlp.extract.protocol_splits import FrameRow, protocol_split
from adaptor_vlp.protocols import HeadTask, load_protocol
from tests.extract.datasets.conftest import XRV_DATA

FRACTIONS = (1.0, 10.0, 100.0)


@pytest.fixture(scope="module")
def rsna_labels() -> pd.DataFrame:
    with zipfile.ZipFile(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip") as archive:
        return pd.read_csv(io.BytesIO(archive.read(archive.namelist()[0])))


@pytest.fixture(scope="module")
def siim_labels() -> pd.DataFrame:
    frame = pd.read_csv(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz")
    frame.columns = ["ImageId", " EncodedPixels"]
    return frame


def _mgca_rsna_frame(labels: pd.DataFrame) -> pd.DataFrame:
    """MGCA/mgca/preprocess/rsna.py:34-43."""
    df = labels.copy()
    df["bbox"] = df.apply(lambda x: 0 if x["Target"] == 0 else [x["x"], x["y"]], axis=1)
    df = df[["patientId", "bbox"]].groupby("patientId").agg(list).reset_index()
    df["Target"] = df["bbox"].apply(lambda x: 0 if x == [0] else 1)
    return df


def _rsna_rows(frame: pd.DataFrame) -> list[FrameRow]:
    return [FrameRow(patient, patient, bool(target)) for patient, target in zip(frame["patientId"], frame["Target"])]


def _ids(split, name: Split) -> set[str]:
    return set(split.splits[name].images)


@pytest.mark.slow
def test_rsna_classification_split_and_subsets_equal_mgca(rsna_labels):
    frame = _mgca_rsna_frame(rsna_labels)
    train_df, test_val_df = train_test_split(frame, test_size=0.15 * 2, random_state=0)
    test_df, valid_df = train_test_split(test_val_df, test_size=0.5, random_state=0)
    task = load_protocol("published").task("rsna", HeadTask.CLASSIFY)

    ours = protocol_split(_rsna_rows(frame), task, FRACTIONS)

    assert len(frame) == 26684 and len(rsna_labels) == 30227
    assert _ids(ours, Split.TRAIN) == set(train_df["patientId"])
    assert _ids(ours, Split.VALIDATE) == set(valid_df["patientId"])
    assert _ids(ours, Split.TEST) == set(test_df["patientId"])
    for pct in (1.0, 10.0):
        assert ours.subsets[pct] == set(train_df.sample(frac=pct / 100, random_state=42)["patientId"])
    assert ours.subsets[100.0] == set(train_df["patientId"])
    assert ours.images_in_several_splits() == frozenset()


@pytest.mark.slow
def test_rsna_segmentation_uses_the_detection_split_and_the_global_generators_draws(rsna_labels):
    frame = _mgca_rsna_frame(rsna_labels)
    train_df, test_val_df = train_test_split(frame, test_size=5337 * 2, random_state=0)
    test_df, valid_df = train_test_split(test_val_df, test_size=0.5, random_state=0)
    filenames = np.array([patient + ".dcm" for patient in train_df["patientId"]])
    task = load_protocol("published").task("rsna", HeadTask.SEGMENT)

    ours = protocol_split(_rsna_rows(frame), task, FRACTIONS)

    assert (len(valid_df), len(test_df)) == (5337, 5337)
    assert _ids(ours, Split.VALIDATE) == set(valid_df["patientId"])
    assert _ids(ours, Split.TEST) == set(test_df["patientId"])
    for pct in (0.01, 0.1, 1):
        np.random.seed(42)
        n = len(filenames)
        indices = np.random.choice(n, int(pct * n), replace=False)
        assert ours.subsets[pct * 100] == {name[:-4] for name in filenames[indices]}


def _siim_rows(labels: pd.DataFrame) -> list[FrameRow]:
    return [FrameRow(image, image, pixels.strip() != "-1")
            for image, pixels in zip(labels["ImageId"], labels[" EncodedPixels"])]


@pytest.mark.slow
def test_siim_split_by_label_row_and_balanced_subsets_equal_mgca(siim_labels):
    df = siim_labels.copy()
    train_df, test_val_df = train_test_split(df, test_size=0.15 * 2, random_state=0)
    test_df, valid_df = train_test_split(test_val_df, test_size=0.5, random_state=0)
    task = load_protocol("published").task("siim", HeadTask.SEGMENT)

    ours = protocol_split(_siim_rows(siim_labels), task, FRACTIONS)

    assert siim_labels["ImageId"].nunique() == 12047
    assert _ids(ours, Split.VALIDATE) == set(valid_df["ImageId"])
    assert _ids(ours, Split.TEST) == set(test_df["ImageId"])
    for split, mgca_df in ((Split.VALIDATE, valid_df), (Split.TEST, test_df)):
        for image, rows in ours.splits[split].rows.items():
            assert sorted(rows) == sorted(mgca_df.index[mgca_df["ImageId"] == image])
    for pct in (0.01, 0.1, 1):
        balanced = _mgca_siim_training(train_df, pct)
        assert ours.subsets[pct * 100] == set(balanced["ImageId"])
        if pct == 1:
            assert _ids(ours, Split.TRAIN) == set(balanced["ImageId"])
    several = ours.images_in_several_splits()
    assert several == _images_in_several(train_df, valid_df, test_df)
    assert ours.row_id(next(iter(several)), Split.TEST).endswith("@test")


def _mgca_siim_training(train_df: pd.DataFrame, data_pct: float) -> pd.DataFrame:
    """MGCA/mgca/datasets/segmentation_dataset.py:50-68, NumPy's generator as segment.py:61 leaves it (seed 42)."""
    np.random.seed(42)
    df = train_df.copy()
    df["class"] = df[" EncodedPixels"].apply(lambda x: x.strip() != "-1")
    df_neg = df[df["class"] == False]  # noqa: E712 (MGCA's comparison)
    df_pos = df[df["class"] == True]  # noqa: E712
    n_pos = df_pos["ImageId"].nunique()
    neg_series = df_neg["ImageId"].unique()
    neg_series_selected = np.random.choice(neg_series, size=n_pos, replace=False)
    df_neg = df_neg[df_neg["ImageId"].isin(neg_series_selected)]
    df = pd.concat([df_pos, df_neg])
    if data_pct != 1:
        ids = df["ImageId"].unique()
        series_selected = np.random.choice(ids, size=int(len(ids) * data_pct), replace=False)
        df = df[df["ImageId"].isin(series_selected)]
    return df


def _images_in_several(*frames: pd.DataFrame) -> frozenset[str]:
    counts = pd.concat([frame["ImageId"].drop_duplicates() for frame in frames]).value_counts()
    return frozenset(counts.index[counts > 1])


@pytest.mark.slow
def test_the_corrected_splits_hold_no_patient_in_two_splits(siim_labels):
    task = load_protocol("corrected").task("siim", HeadTask.SEGMENT)
    images = siim_labels.groupby("ImageId", sort=False)[" EncodedPixels"].agg(lambda x: any(v.strip() != "-1"
                                                                                            for v in x))
    frame = [FrameRow(image, f"patient-{index // 2}", positive) for index, (image, positive)
             in enumerate(images.items())]

    ours = protocol_split(frame, task)

    patients = [{row.patient for row in frame if row.image in ours.splits[split].rows} for split in ours.splits]
    assert ours.images_in_several_splits() == frozenset()
    assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1:])
    assert ours.subsets == {}


def test_a_fixed_held_out_count_larger_than_the_dataset_says_it_needs_the_full_dataset():
    task = load_protocol("published").task("rsna", HeadTask.SEGMENT)
    frame = [FrameRow(f"p{index}", f"p{index}", index % 3 == 0) for index in range(1200)]

    with pytest.raises(DownstreamLayoutError, match=r"holds out 10,674 patient rows .* the dataset has 1,200"):
        protocol_split(frame, task)
