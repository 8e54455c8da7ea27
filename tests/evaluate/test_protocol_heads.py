"""Heads by protocol: each dataset's head trains with its protocol file's recipe, exactly as the published
finetuner steps it, and a manifest split by another protocol is refused."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from adaptor_vlp.evaluate.classify import ClassifySettings, classification_targets, run_classification
from adaptor_vlp.evaluate.early_stopping import TrainingSettings, train_with_early_stopping
from adaptor_vlp.evaluate.features import open_adaptor_run, open_dataset_rows, pooled_features
from adaptor_vlp.evaluate.heads import HeadKind, LabelStructure
from adaptor_vlp.evaluate.protocol_heads import (
    ProtocolMismatch,
    protocol_head_kind,
    protocol_mlp_settings,
    segmentation_recipe,
)
from adaptor_vlp.evaluate.results import FeatureSpace, RunContext
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, LossName, SegmentationProtocol
from adaptor_vlp.protocols import HeadTask, load_protocol
from tests.evaluate.conftest import DATASET, VISION


@pytest.mark.parametrize("protocol", ("published", "corrected"))
@pytest.mark.parametrize("dataset", ("rsna", "covidx"))
@pytest.mark.parametrize("pct", (1.0, 10.0, 100.0))
def test_the_heads_recipe_per_dataset_is_the_protocol_files(protocol, dataset, pct):
    task = load_protocol(protocol).task(dataset, HeadTask.CLASSIFY)
    recipe, n_train = task.training, 1234

    settings = protocol_mlp_settings(task, n_train, pct)

    assert protocol_head_kind(task) is HeadKind.MLP
    assert (settings.hidden, settings.dropout) == (task.head.hidden, task.head.dropout) == (512, 0.1)
    training = settings.training
    assert (training.learning_rate, training.weight_decay) == (recipe.learning_rate, recipe.weight_decay)
    assert training.batch_size == recipe.batch_for(pct) * recipe.devices
    assert (training.max_epochs, training.patience, training.min_delta) == (recipe.epochs, recipe.patience, 1e-3)
    assert training.schedule_t0 == int(0.4 * math.ceil(n_train / recipe.batch_for(pct)) * recipe.epochs)
    assert (training.eta_min, training.select_on_metric) == (1e-8, True)


def test_the_published_recipes_differ_by_dataset_as_the_scripts_do():
    published = load_protocol("published")
    rsna = protocol_mlp_settings(published.task("rsna", HeadTask.CLASSIFY), 18678, 100.0).training
    covidx = protocol_mlp_settings(published.task("covidx", HeadTask.CLASSIFY), 1000, 100.0).training

    assert (rsna.learning_rate, rsna.weight_decay, rsna.batch_size, rsna.max_epochs, rsna.patience) == (
        5e-5, 1e-4, 1024, 100, 10)
    assert (covidx.learning_rate, covidx.weight_decay, covidx.batch_size, covidx.max_epochs, covidx.patience) == (
        5e-4, 0.05, 256, 50, 5)


def test_selection_on_a_validation_metric_keeps_the_best_and_stops_after_patience_without_min_delta_gains():
    scores = iter([0.60, 0.70, 0.7005, 0.69, 0.7009, 0.99])
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    data = (torch.randn(8, 2), torch.randn(8, 1))
    settings = TrainingSettings(max_epochs=10, patience=3, min_delta=1e-3, select_on_metric=True, schedule_t0=2,
                                eta_min=1e-8)

    outcome = train_with_early_stopping(model, nn.MSELoss(), data, data, settings, seed=0,
                                        val_metric=lambda outputs, targets: next(scores))

    # 0.7005 and 0.7009 rise by less than min_delta over 0.70: three validations without a gain stop the run,
    # and the best metric seen (0.7009, epoch 5) is the one kept, as Lightning's ModelCheckpoint keeps it.
    assert (outcome.epochs_run, outcome.best_epoch, outcome.best_val_metric) == (5, 5, 0.7009)


def test_a_protocol_classification_trains_adaptor_and_baseline_with_its_recipe_and_records_it(toy, toy_run):
    run = open_adaptor_run(toy_run)
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION, run)
    features = {space: pooled_features(rows, np.arange(len(rows)), space, run) for space in FeatureSpace}
    contexts = {space: RunContext(DATASET, {"image": {}}, None) for space in FeatureSpace}
    targets = classification_targets(rows, LabelStructure.BINARY, ["Effusion"])
    corrected = load_protocol("corrected").task("rsna", HeadTask.CLASSIFY)

    runs = run_classification(rows, targets, features, contexts,
                              ClassifySettings(fractions=(100.0,), seed=1, n_resamples=20, protocol=corrected))

    recipes = {result.record.feature_space: result.record.details["head"]["recipe"] for result in runs}
    assert recipes[FeatureSpace.ADAPTOR] == recipes[FeatureSpace.BACKBONE]
    recipe = recipes[FeatureSpace.BACKBONE]
    assert (recipe["learning_rate"], recipe["step_batch"], recipe["patience"], recipe["dropout"]) == (
        5e-5, 1024, 10, 0.1)
    for result in runs:
        assert result.record.method == "mlp" and result.record.details["protocol"]["task"] == "rsna-classification"
        assert result.record.metrics["macro_auroc"].point > 0.5


def test_a_manifest_split_otherwise_is_refused(toy):
    rows = open_dataset_rows(toy.cache_dir, DATASET, VISION)
    features = {FeatureSpace.BACKBONE: pooled_features(rows, np.arange(len(rows)), FeatureSpace.BACKBONE, None)}
    contexts = {FeatureSpace.BACKBONE: RunContext(DATASET, {"image": {}}, None)}
    targets = classification_targets(rows, LabelStructure.BINARY, ["Effusion"])
    published = load_protocol("published").task("rsna", HeadTask.CLASSIFY)
    with pytest.raises(ProtocolMismatch, match="manifest was split by no protocol.*extract manifest --protocol"):
        run_classification(rows, targets, features, contexts, ClassifySettings(protocol=published))


@pytest.mark.parametrize("protocol", ["published", "corrected"])
def test_the_segmentation_recipe_is_the_protocol_files_but_for_what_the_caller_keeps(protocol):
    task = load_protocol(protocol).task("siim", HeadTask.SEGMENT)
    base = SegmentationProtocol(decoder=DecoderName.LIGHT, batch_size=16, max_epochs=10, loss=LossName.DICE_BCE)
    recipe = segmentation_recipe(task, base)
    assert (recipe.learning_rate, recipe.weight_decay, recipe.batch_size) == (5e-4, 1e-4, 4)
    assert (recipe.max_epochs, recipe.validation_interval, recipe.patience_epochs) == (100, 3, 9)
    assert recipe.loss is LossName.PUBLISHED_MIXED and recipe.image_size == 896
    assert recipe.decoder is DecoderName.LIGHT  # the protocol file describes its decoders in words: the caller's
    kept = segmentation_recipe(task, base, keep=("batch_size", "max_epochs"))
    assert (kept.batch_size, kept.max_epochs, kept.learning_rate) == (16, 10, 5e-4)
