"""The dataset layouts the extract stage reads, one entry each: the single table of dataset name -> reader.

`adaptor extract manifest` takes its `--dataset` choices, its `--root` help and which reader-specific
option applies to which layout from here; the study runner reads a spec's dataset with the same
entry's reader and prints its `description` as the data a manifest step needs; ARCHITECTURE.md and
the README list the same entries. A new dataset is one reader module in this package plus one entry
below.

Each entry also states the facts a downstream protocol depends on (what a split keeps together,
where the splits come from, the labels, the tasks the dataset serves); each is what the reader
named does, whose module docstring cites the published code it follows (MGCA, GLoRIA).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Manifest
from adaptor_vlp.extract.datasets import chexpert, covidx, rsna, siim
from adaptor_vlp.extract.datasets.mimic_cxr import read_mimic_cxr


class ManifestDataset(str, Enum):
    """The dataset layouts `adaptor extract manifest --dataset` and a study spec's `layout` can name."""

    MIMIC_CXR = "mimic-cxr"
    CHEXPERT = "chexpert"
    RSNA = "rsna"
    COVIDX = "covidx"
    SIIM = "siim"


class UnknownDataset(ValueError):
    """A dataset layout name that is not in the registry; the message lists the known names."""


@dataclass(frozen=True)
class DatasetLayout:
    """One public dataset layout: how to read its tree into a manifest, and the facts its protocols rely on."""

    name: ManifestDataset
    title: str
    """The dataset and release, where it is published."""
    tree: str
    """What the folder given as --root holds."""
    reader: Callable[..., Manifest]
    """`reader(root, **keywords)`: the tree under `root` as a manifest; every keyword has the published default."""
    options: Mapping[str, str]
    """`adaptor extract manifest` option -> the reader keyword it sets (the options this layout accepts)."""
    group: str
    """What a split keeps together (no such group straddles train, validate and test)."""
    splits: str
    """Where the train/validate/test splits come from."""
    labels: tuple[str, ...]
    """The label columns the manifest records."""
    tasks: str
    """What the dataset serves in the paper's protocols."""

    @property
    def description(self) -> str:
        """One line: the dataset and what its tree holds (the study plan's 'data' line)."""
        return f"{self.title}: {self.tree}"

    def read(self, root: Path, **keywords: Any) -> Manifest:
        """The tree under `root` as a manifest, the reader's defaults for every keyword not given."""
        return self.reader(root, **keywords)


_SPLIT_OPTIONS = {"--val-fraction": "val_fraction", "--seed": "seed"}
"""The options of every reader that draws a validation split by patient with a seed."""

LAYOUTS: Mapping[ManifestDataset, DatasetLayout] = {layout.name: layout for layout in (
    DatasetLayout(
        ManifestDataset.MIMIC_CXR,
        title="MIMIC-CXR-JPG 2.0.0 (PhysioNet, credentialed)",
        tree="files/ and the mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz tables, with the reports "
             "(files/pNN/pSUBJECT/sSTUDY.txt) beside them or in the reports folder",
        reader=read_mimic_cxr,
        options={"--reports": "reports_root", "--views": "views", "--merge-val-test": "merge_validate_test",
                 "--section-parser": "section_parser"},
        group="patient (subject_id)",
        splits="the official split table (mimic-cxr-2.0.0-split)",
        labels=CHEXPERT_LABELS,
        tasks="pre-training on image-report pairs (IMPRESSION + FINDINGS); its 14 CheXpert-labeller labels",
    ),
    DatasetLayout(
        ManifestDataset.CHEXPERT,
        title="CheXpert-v1.0 or CheXpert-v1.0-small",
        tree="train.csv, valid.csv and the images",
        reader=chexpert.read_chexpert,
        options={"--uncertain": "uncertain", "--blank": "blank", **_SPLIT_OPTIONS},
        group="patient (patientNNNNN in Path)",
        splits=f"official valid.csv is the test split; validation is {chexpert.DEFAULT_VAL_FRACTION:g} of the "
               "training patients, seeded",
        labels=CHEXPERT_LABELS,
        tasks="multi-label classification, reported on the five competition tasks "
              f"({', '.join(chexpert.COMPETITION_TASKS)})",
    ),
    DatasetLayout(
        ManifestDataset.RSNA,
        title="RSNA Pneumonia Detection Challenge (Kaggle)",
        tree="stage_2_train_labels.csv and stage_2_train_images/*.dcm",
        reader=rsna.read_rsna,
        options={"--test-fraction": "test_fraction", **_SPLIT_OPTIONS},
        group="patient (patientId; one image each)",
        splits=f"train/validate/test drawn by patient, seeded: validate {rsna.DEFAULT_VAL_FRACTION:g}, "
               f"test {rsna.DEFAULT_TEST_FRACTION:g}",
        labels=rsna.LABEL_NAMES,
        tasks="binary classification (pneumonia); opacity boxes as a detection or segmentation target",
    ),
    DatasetLayout(
        ManifestDataset.COVIDX,
        title="COVIDx CXR (COVID-Net; the 3-class files of v9 or earlier)",
        tree="a train and a test list (train_COVIDx9A.txt and test_COVIDx9A.txt as the paper read them, or "
             "train.txt and test.txt), train/ and test/",
        reader=covidx.read_covidx,
        options={**_SPLIT_OPTIONS, "--train-file": "train_file", "--test-file": "test_file"},
        group="patient (the label files' first column)",
        splits=f"the official test list is the test split; val.txt where it exists, else "
               f"{covidx.DEFAULT_VAL_FRACTION:g} "
               "of the training patients, seeded",
        labels=covidx.THREE_CLASSES,
        tasks="multi-class classification (normal, pneumonia, COVID-19; CXR-2 and later: negative, positive)",
    ),
    DatasetLayout(
        ManifestDataset.SIIM,
        title="SIIM-ACR Pneumothorax Segmentation (Kaggle)",
        tree="train-rle.csv and dicom-images-train/",
        reader=siim.read_siim,
        options={"--test-fraction": "test_fraction", **_SPLIT_OPTIONS},
        group="patient (the DICOM header's PatientID, else the image)",
        splits=f"train/validate/test drawn by patient, seeded: validate {siim.DEFAULT_VAL_FRACTION:g}, "
               f"test {siim.DEFAULT_TEST_FRACTION:g}",
        labels=siim.LABEL_NAMES,
        tasks="segmentation of pneumothorax (run-length masks joined per image)",
    ),
)}
"""Every dataset layout, in the order `adaptor extract manifest --help` lists them."""


def dataset_layout(name: ManifestDataset | str) -> DatasetLayout:
    """The registry entry of `name`; UnknownDataset listing the known names when there is none."""
    try:
        return LAYOUTS[ManifestDataset(name)]
    except ValueError:
        known = ", ".join(layout.value for layout in ManifestDataset)
        raise UnknownDataset(f"unknown dataset layout {name!r}; known layouts: {known}") from None


def layouts_accepting(option: str) -> tuple[ManifestDataset, ...]:
    """The layouts whose reader takes `adaptor extract manifest` option `option` (e.g. '--seed')."""
    return tuple(layout.name for layout in LAYOUTS.values() if option in layout.options)
