"""A downstream protocol's head, training recipe and training subsets, as the evaluate stage runs them.

The protocol file (`adaptor_vlp.protocols`) says per dataset and task which head to train and how; this module
turns its recipe into the settings of the shared training loop, exactly as the published finetuner trained
(AdamW, a step batch of batch_size x devices, CosineAnnealingWarmRestarts stepped per epoch with T_0 counted in
steps, early stopping and checkpoint selection on the validation metric), and picks each fraction's training
subset: the ids the manifest recorded when the protocol draws at manifest time (published), else a nested
subset drawn with the run's seed (corrected). A manifest split by another protocol is refused.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Collection

import numpy as np

from adaptor_vlp.evaluate.early_stopping import TrainingSettings
from adaptor_vlp.evaluate.features import DatasetRows
from adaptor_vlp.evaluate.heads import HeadKind, MlpSettings
from adaptor_vlp.evaluate.segmentation_protocol import LossName, SegmentationProtocol, SelectionMetric
from adaptor_vlp.protocols import (
    HeadArchitecture,
    HeadTask,
    Protocol,
    ProtocolRecord,
    Schedule,
    Selection,
    SplitRule,
    SubsetRule,
    TaskProtocol,
    TrainingBalance,
)
from adaptor_vlp.train.batches import DataSubset


class ProtocolMismatch(ValueError):
    """The cache's manifest was not split by the protocol a head is asked to follow."""


def protocol_classification_task(protocol: Protocol, rows: DatasetRows) -> TaskProtocol:
    """The protocol's classification task for the manifest's dataset, its class vocabulary checked.

    A manifest whose label names are not the task's classes (a 2-class COVIDx list under a 3-class task) is
    refused, naming both.
    """
    manifest = rows.manifest
    task = protocol.task(manifest.dataset, HeadTask.CLASSIFY)
    if task.classes and tuple(manifest.label_names) != task.classes:
        raise ProtocolMismatch(
            f"the {manifest.dataset} manifest holds the classes {list(manifest.label_names)}, but protocol "
            f"{protocol.name!r} task {task.name!r} classifies {list(task.classes)}: its published values are not "
            "comparable; give the dataset files of that class vocabulary")
    return task


def protocol_head_kind(task: TaskProtocol) -> HeadKind:
    """The head the protocol trains on this task."""
    if task.head is None:
        raise ProtocolMismatch(f"protocol task {task.name!r} is a {task.kind.value} task with no classification head")
    return HeadKind.MLP if task.head.architecture is HeadArchitecture.MLP else HeadKind.LINEAR


def protocol_mlp_settings(task: TaskProtocol, n_train: int, data_pct: float) -> MlpSettings:
    """The MLP head and its training for `n_train` training samples at `data_pct` percent."""
    recipe = task.training
    cosine = recipe.schedule is Schedule.COSINE_WARM_RESTARTS_PER_EPOCH
    training = TrainingSettings(
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.step_batch(data_pct),
        max_epochs=recipe.epochs,
        patience=recipe.patience,
        schedule_t0=recipe.t0(n_train, data_pct) if cosine else None,
        eta_min=recipe.eta_min,
        validate_every=recipe.validate_every,
        min_delta=recipe.min_delta,
        select_on_metric=recipe.selection is Selection.VALIDATION_METRIC,
    )
    return MlpSettings(hidden=task.head.hidden, dropout=task.head.dropout, training=training)


def check_manifest_protocol(rows: DatasetRows, task: TaskProtocol) -> ProtocolRecord | None:
    """The manifest's protocol record, checked to be split by the task's rule.

    A manifest written without `--protocol` was split by the readers' default, patient groups (the corrected
    rule) without a balanced training split; it serves such a task and is refused for any other.
    """
    manifest = rows.manifest
    record = ProtocolRecord.from_options(manifest.options, f"the {manifest.dataset} manifest")
    if record is None:
        matches = task.split.rule is SplitRule.PATIENT_GROUPS and task.split.balance is TrainingBalance.ALL
    else:
        matches = record.split_matches(task.split)
    if not matches:
        made_by = f"protocol {record.name!r} ({dict(record.split)})" if record else "no protocol (patient groups)"
        raise ProtocolMismatch(
            f"the {manifest.dataset} manifest was split by {made_by}, not as protocol task {task.name!r} splits "
            f"({task.split.to_json()}); write the manifest with `adaptor extract manifest --protocol` for this "
            "protocol and extract again")
    return record


def protocol_subset(rows: DatasetRows, available: np.ndarray, data_pct: float, task: TaskProtocol,
                    record: ProtocolRecord | None, seed: int) -> tuple[np.ndarray, DataSubset]:
    """The training subset at `data_pct` percent: recorded at manifest time, or drawn with the run's `seed`."""
    if task.subset.rule is SubsetRule.NESTED_SEEDED:
        return rows.training_subset(available, data_pct, seed)
    drawn = record.subsets.get(task.name, {}) if record else {}
    if float(data_pct) in drawn:
        return rows.subset_of_ids(available, data_pct, frozenset(drawn[float(data_pct)]), task.subset.seed)
    if data_pct == 100:
        return rows.subset_of_ids(available, data_pct, frozenset(rows.ids[available].astype(str)), task.subset.seed)
    raise ProtocolMismatch(
        f"the {rows.manifest.dataset} manifest records no {data_pct:g}% subset for protocol task {task.name!r} "
        f"(it records {sorted(drawn)}); write it with `adaptor extract manifest --protocol` and that fraction")


def segmentation_recipe(task: TaskProtocol, base: SegmentationProtocol,
                        keep: Collection[str] = ()) -> SegmentationProtocol:
    """The decoder's recipe a protocol's segmentation task fixes, on top of `base` (decoder, views).

    From the task's training table: AdamW learning rate and weight decay, per-device batch size, epochs,
    the cosine period and floor, the validation interval, patience (the file counts validations, the
    recipe epochs), the minimum gain, and what selects the kept epoch; from its segmentation table: the
    loss (MGCA's mixed loss with the original Dice) and the input size. The fields named in `keep` stay
    `base`'s. The segmentation trainer selects by the published validation Dice or by the loss, so a
    protocol selecting by its headline metric (`corrected`: Dice over positive images) selects by the
    published validation Dice: stated in ARCHITECTURE.md.
    """
    training = task.training
    segmentation = task.segmentation
    values = {
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "batch_size": training.batch_size,
        "max_epochs": training.epochs,
        "validation_interval": training.validate_every,
        "patience_epochs": training.patience * training.validate_every,
        "min_improvement": training.min_delta,
        "min_learning_rate": training.eta_min,
        "selection": (SelectionMetric.LOSS if training.selection is Selection.VALIDATION_LOSS
                      else SelectionMetric.PUBLISHED_DICE),
    }
    if training.t0_epochs is not None:
        values["cosine_period_epochs"] = training.t0_epochs
    if segmentation.get("loss") == "mixed" and segmentation.get("dice_loss") == "original":
        values["loss"] = LossName.PUBLISHED_MIXED
    if "input_size" in segmentation:
        values["image_size"] = int(segmentation["input_size"])
    return replace(base, **{key: value for key, value in values.items() if key not in keep})
