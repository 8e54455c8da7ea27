"""Heads on toy features beat chance, fractions draw from the training split only, labels follow stated policies."""
import math

import numpy as np
import pytest

from adaptor_vlp.evaluate.classify import (
    ClassificationError,
    ClassifySettings,
    UncertainPolicy,
    classification_targets,
    run_classification,
)
from adaptor_vlp.evaluate.features import open_adaptor_run, open_dataset_rows, pooled_features
from adaptor_vlp.evaluate.heads import HeadKind, LabelStructure
from adaptor_vlp.evaluate.results import FeatureSpace, RunContext
from tests.evaluate.conftest import DATASET, LABELS, VISION

CHANCE_AUROC = 0.5
MARGIN = 0.25
"""A head on the toy features must reach macro AUROC 0.75 on the test split (chance: 0.5)."""


@pytest.fixture(scope="module")
def classified(toy, toy_run):
    run = open_adaptor_run(toy_run)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, run)
    features = {space: pooled_features(rows, np.arange(len(rows)), space, run) for space in FeatureSpace}
    contexts = {space: RunContext(DATASET, {"image": {}}, run.reference() if space is FeatureSpace.ADAPTOR else None)
                for space in FeatureSpace}
    settings = ClassifySettings(head=HeadKind.LINEAR, fractions=(1.0, 10.0, 100.0), seed=4, n_resamples=50)
    return rows, run_classification(rows, classification_targets(rows), features, contexts, settings)


def _result(runs, space: FeatureSpace, pct: float):
    [match] = [run for run in runs if run.record.feature_space is space and run.record.data_pct == pct]
    return match


@pytest.mark.slow
@pytest.mark.parametrize("space", list(FeatureSpace))
def test_a_linear_probe_on_all_training_rows_beats_chance_by_the_stated_margin(classified, space):
    _, runs = classified
    record = _result(runs, space, 100.0).record
    interval = record.metrics["macro_auroc"]
    assert interval.point >= CHANCE_AUROC + MARGIN
    assert interval.low <= interval.point <= interval.high
    assert set(record.metrics) == {"macro_auroc", *(f"auroc/{name}" for name in LABELS)}


def test_fractions_draw_nested_subsets_from_the_training_split_only(classified):
    rows, runs = classified
    train_ids = set(rows.ids[rows.positions("train")])
    subsets = {}
    for pct in (1.0, 10.0, 100.0):
        adaptor, backbone = (_result(runs, space, pct) for space in FeatureSpace)
        ids = set(adaptor.arrays["subset_ids"])
        assert ids == set(backbone.arrays["subset_ids"])
        assert ids <= train_ids
        assert adaptor.record.subset["n_chosen"] == len(ids) == math.ceil(len(train_ids) * pct / 100)
        assert adaptor.record.subset["n_available"] == len(train_ids)
        assert (adaptor.record.data_pct, adaptor.record.subset["seed"]) == (pct, 4)
        assert adaptor.record.details["n_validate"] == len(rows.positions("validate"))
        assert adaptor.record.details["n_test"] == len(rows.positions("test"))
        subsets[pct] = ids
    assert subsets[1.0] <= subsets[10.0] <= subsets[100.0] == train_ids


def test_labels_a_small_subset_cannot_teach_are_left_out_and_said(classified):
    _, runs = classified
    record = _result(runs, FeatureSpace.BACKBONE, 1.0).record
    assert record.skipped or record.details["labels_not_trained"]
    if not record.skipped:
        trained = set(LABELS) - set(record.details["labels_not_trained"])
        assert {name.split("/")[1] for name in record.metrics if "/" in name} <= trained


def test_uncertain_labels_train_by_the_policy_and_are_not_scored(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    column = rows.label_names.index("Edema")
    uncertain = rows.labels[:, column] == -1
    assert uncertain.any()

    zeros = classification_targets(rows, uncertain=UncertainPolicy.ZEROS)
    ones = classification_targets(rows, uncertain=UncertainPolicy.ONES)
    assert (zeros.fit[uncertain, column] == 0).all() and (ones.fit[uncertain, column] == 1).all()
    assert np.isnan(zeros.scored[uncertain, column]).all()
    not_mentioned = np.isnan(rows.labels)
    assert (zeros.fit[not_mentioned] == 0).all() and (zeros.scored[not_mentioned] == 0).all()


def test_one_label_makes_a_binary_task(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    targets = classification_targets(rows, labels=["Opacity"])
    assert targets.task is LabelStructure.BINARY
    assert targets.fit.shape == (len(rows),)


def test_a_multiclass_task_needs_one_positive_label_per_row(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    with pytest.raises(ClassificationError, match="exactly one positive label per row"):
        classification_targets(rows, task=LabelStructure.MULTICLASS)


def test_unknown_labels_are_refused_naming_the_known_ones(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    with pytest.raises(ClassificationError, match="Cardiomegaly.*Effusion"):
        classification_targets(rows, labels=["Cardiomegaly"])
