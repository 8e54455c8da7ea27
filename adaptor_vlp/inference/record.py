"""What a trained model folder says about itself: an exported folder's `config.json`, or a run folder's checkpoint.

Both kinds of folder give one `ModelRecord` (the Adaptor's shape, the recipe, the chosen epoch
and its validation metrics, the training data, and for each modality the provenance of the
store the Adaptor was trained on) and the Adaptor's weights, so everything downstream of
loading treats them alike.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.train.checkpoint import CheckpointError, CheckpointKind, checkpoint_paths, load_adaptor
from adaptor_vlp.train.model import Adaptor, AdaptorConfig

EXPORT_FORMAT = "adaptor-vlp/exported-adaptor"
EXPORT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
TRAINING_SPLIT = "train"
"""The manifest split an Adaptor trains on (validation picks its best epoch)."""


class ModelFolderError(ValueError):
    """A folder that is neither an exported model nor a run folder with the checkpoint asked for, or is damaged."""


@dataclass(frozen=True)
class ModelRecord:
    """Everything known about a trained Adaptor besides its weights.

    `provenance` maps "image" and "text" to the provenance block (JSON) of the store the Adaptor
    was trained on: the backbone, its weights identifier and SHA-256, and the preprocessing and
    tokenizer settings extraction recorded. `backbone_entries` are the backbones' registry
    entries as resolved at export (empty for a run folder). `evaluation` holds summaries of
    evaluation results made with these weights (empty when there are none).
    """

    adaptor_config: Mapping[str, Any]
    recipe: Mapping[str, Any]
    checkpoint: CheckpointKind
    epoch: int
    best_epoch: int
    metrics: Mapping[str, float]
    provenance: Mapping[str, Mapping[str, Any]]
    data_subset: Mapping[str, Any]
    trainable_parameters: int
    run_name: str
    backbone_entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluation: tuple[Mapping[str, Any], ...] = ()

    def config(self) -> AdaptorConfig:
        return AdaptorConfig.from_dict(dict(self.adaptor_config))

    def trained_on(self, modality: Modality) -> Mapping[str, Any]:
        """The provenance of the store of `modality` the Adaptor was trained on."""
        return self.provenance[Modality(modality).value]

    def to_json(self) -> dict[str, Any]:
        """The `config.json` document of an exported folder."""
        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "adaptor": dict(self.adaptor_config),
            "recipe": dict(self.recipe),
            "checkpoint": {"kind": self.checkpoint.value, "epoch": self.epoch, "best_epoch": self.best_epoch,
                           "metrics": dict(self.metrics), "trainable_parameters": self.trainable_parameters,
                           "run_name": self.run_name},
            "training_data": {"split": TRAINING_SPLIT, "data_subset": dict(self.data_subset)},
            "backbones": {modality: {"registry_entry": dict(self.backbone_entries.get(modality, {})),
                                     "provenance": dict(self.provenance[modality])}
                          for modality in sorted(self.provenance)},
            "evaluation": [dict(result) for result in self.evaluation],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any], source: str) -> ModelRecord:
        """Reads what `to_json` wrote; ModelFolderError names `source` and what is wrong."""
        if document.get("format") != EXPORT_FORMAT or document.get("format_version") != EXPORT_FORMAT_VERSION:
            raise ModelFolderError(f"{source}: not an exported adaptor-vlp model of format version "
                                   f"{EXPORT_FORMAT_VERSION} (found {document.get('format')!r} version "
                                   f"{document.get('format_version')!r}); export it with `adaptor export`")
        try:
            checkpoint = document["checkpoint"]
            backbones = document["backbones"]
            return cls(
                adaptor_config=document["adaptor"], recipe=document["recipe"],
                checkpoint=CheckpointKind(checkpoint["kind"]), epoch=checkpoint["epoch"],
                best_epoch=checkpoint["best_epoch"], metrics=checkpoint["metrics"],
                provenance={modality: entry["provenance"] for modality, entry in backbones.items()},
                data_subset=document["training_data"]["data_subset"],
                trainable_parameters=checkpoint["trainable_parameters"], run_name=checkpoint["run_name"],
                backbone_entries={modality: entry["registry_entry"] for modality, entry in backbones.items()},
                evaluation=tuple(document["evaluation"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFolderError(f"{source}: malformed ({error!r}); export the run again") from None


def is_export(folder: Path) -> bool:
    """True for an exported folder (it holds config.json); a run folder holds checkpoints instead."""
    return (Path(folder) / CONFIG_FILE).is_file()


def read_model(folder: Path, kind: CheckpointKind = CheckpointKind.BEST) -> tuple[ModelRecord, Adaptor]:
    """The record and the Adaptor (eval mode, CPU) of an exported folder or of a run folder's `kind` checkpoint.

    A run folder's tensor file is checked against the SHA-256 its JSON recorded (`train.checkpoint`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such folder; give an exported model (adaptor export) or a run folder")
    if is_export(folder):
        return _read_export(folder)
    if not checkpoint_paths(folder, kind).record.is_file():
        raise ModelFolderError(f"{folder}: neither an exported model ({CONFIG_FILE}) nor a run folder with a "
                               f"{kind.value} checkpoint; give the folder `adaptor export` wrote or a trained run")
    try:
        loaded = load_adaptor(folder, kind)
    except CheckpointError as error:
        raise ModelFolderError(str(error)) from None
    record = loaded.record
    return ModelRecord(
        adaptor_config=record.adaptor_config, recipe=record.recipe, checkpoint=kind, epoch=record.epoch,
        best_epoch=record.best_epoch, metrics=record.best_metrics if kind is CheckpointKind.BEST else record.metrics,
        provenance=record.provenance, data_subset=record.data_subset,
        trainable_parameters=record.trainable_parameters, run_name=folder.resolve().name,
    ), loaded.model


def _read_export(folder: Path) -> tuple[ModelRecord, Adaptor]:
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{config_path}: not readable JSON ({error})") from None
    record = ModelRecord.from_json(document, str(config_path))
    if not weights_path.is_file():
        raise ModelFolderError(f"{weights_path}: missing, though {CONFIG_FILE} is there; export the run again")
    try:
        model = Adaptor(record.config())
        model.load_state_dict(load_file(weights_path))
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelFolderError(f"{weights_path}: does not load into the Adaptor {CONFIG_FILE} describes "
                               f"({error})") from None
    return record, model.eval()


def adaptor_weights(model: Adaptor) -> dict[str, torch.Tensor]:
    """The Adaptor's state dict as contiguous CPU tensors, ready for safetensors."""
    return {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
