"""Checkpoints: tensors in safetensors, everything else in JSON beside them; never a pickle.

`<run>/last.safetensors` holds the model's parameters, the optimiser's per-parameter state,
the scheduler's step count and the random number generators' states, which is all a resumed run
needs to continue bit for bit; the optimiser's and scheduler's plain settings ride along in the
file's string metadata. `<run>/best.safetensors` holds the best epoch's parameters alone
(`save_weights`): nothing resumes from it. `<run>/<kind>.json` holds what a reader needs to
know: the Adaptor config, the recipe, epoch and step, metrics, the provenance of the two stores
it was trained on, the data subset, and the SHA-256 of the tensor file, checked on every load.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from adaptor_vlp.cache_schema.writes import write_together
from adaptor_vlp.train.model import Adaptor, AdaptorConfig

CHECKPOINT_FORMAT = "adaptor-vlp/adaptor-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer.state."
RNG_TORCH = "rng.torch"
RNG_CUDA_PREFIX = "rng.cuda."
OPTIMIZER_GROUPS_KEY = "optimizer.param_groups"
SCHEDULER_KEY = "scheduler"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, altered since it was written, or from another format."""


class CheckpointKind(str, enum.Enum):
    """The best epoch so far (by the recipe's selection) or the latest one (for resuming)."""

    BEST = "best"
    LAST = "last"


@dataclass(frozen=True)
class CheckpointRecord:
    """The JSON half of a checkpoint: what was trained, on what, how far, and how well."""

    adaptor_config: Mapping[str, Any]
    recipe: Mapping[str, Any]
    epoch: int
    step: int
    metrics: Mapping[str, float]
    best_epoch: int
    best_metrics: Mapping[str, float]
    provenance: Mapping[str, Any]
    data_subset: Mapping[str, Any]
    trainable_parameters: int
    wall_seconds: float

    def config(self) -> AdaptorConfig:
        return AdaptorConfig.from_dict(dict(self.adaptor_config))


@dataclass(frozen=True)
class LoadedAdaptor:
    """A trained Adaptor in eval mode, its record, and the tensor file's hash (the weights' identity)."""

    model: Adaptor
    record: CheckpointRecord
    weights_path: Path
    weights_sha256: str


@dataclass(frozen=True)
class CheckpointFiles:
    """The two files of one checkpoint: the tensors (safetensors) and the JSON record that names and checks them."""

    tensors: Path
    record: Path


def checkpoint_paths(run_dir: Path, kind: CheckpointKind) -> CheckpointFiles:
    """The files of one checkpoint in a run folder (whether or not they exist)."""
    run_dir = Path(run_dir)
    return CheckpointFiles(tensors=run_dir / f"{kind.value}.safetensors", record=run_dir / f"{kind.value}.json")


def save_checkpoint(
    run_dir: Path,
    kind: CheckpointKind,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    record: CheckpointRecord,
) -> Path:
    """Writes both files so the JSON never names a tensor file it does not match (see `_write_checkpoint`)."""
    tensors = _model_tensors(model.state_dict())
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for name, value in state.items():
            tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors[RNG_TORCH] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{RNG_CUDA_PREFIX}{device}"] = state
    metadata = {
        OPTIMIZER_GROUPS_KEY: json.dumps(optimizer_state["param_groups"]),
        SCHEDULER_KEY: json.dumps(scheduler.state_dict()),
    }
    return _write_checkpoint(run_dir, kind, tensors, metadata, record)


def save_weights(run_dir: Path, kind: CheckpointKind, weights: Mapping[str, torch.Tensor],
                 record: CheckpointRecord) -> Path:
    """A checkpoint of an Adaptor's weights (a state dict) alone: loadable by `load_adaptor`, not resumable."""
    return _write_checkpoint(run_dir, kind, _model_tensors(weights), {}, record)


def _model_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {MODEL_PREFIX + name: value.detach().cpu().contiguous() for name, value in weights.items()}


def _write_checkpoint(run_dir: Path, kind: CheckpointKind, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str], record: CheckpointRecord) -> Path:
    """Both files are written in full before either replaces its predecessor (`write_together`), so a
    failed write (a full disk) raises WriteFailed naming the file and leaves the previous checkpoint
    of this kind whole."""
    files = checkpoint_paths(run_dir, kind)
    tensor_path, json_path = files.tensors, files.record
    tensor_bytes = save(tensors, metadata=metadata)
    document = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "weights_file": tensor_path.name,
        "weights_sha256": hashlib.sha256(tensor_bytes).hexdigest(),
        **asdict(record),
    }
    record_bytes = json.dumps(document, indent=1, default=_json_default).encode("utf-8")
    write_together({tensor_path: tensor_bytes, json_path: record_bytes})
    return tensor_path


@dataclass(frozen=True)
class RecordedCheckpoint:
    """A checkpoint as its JSON file records it: the record and the SHA-256 its tensor file must have."""

    record: CheckpointRecord
    weights_sha256: str


def read_record(run_dir: Path, kind: CheckpointKind) -> RecordedCheckpoint:
    """A checkpoint's record and the SHA-256 its tensor file must have."""
    json_path = checkpoint_paths(run_dir, kind).record
    if not json_path.is_file():
        raise CheckpointError(f"{json_path}: no {kind.value} checkpoint in {run_dir}; train a run there first")
    document = json.loads(json_path.read_text())
    if document.get("format") != CHECKPOINT_FORMAT or document.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: not an adaptor-vlp checkpoint of format version "
                              f"{CHECKPOINT_FORMAT_VERSION} (found {document.get('format')!r} "
                              f"version {document.get('format_version')!r})")
    fields = CheckpointRecord.__dataclass_fields__
    missing = sorted(set(fields) - set(document))
    if missing:
        raise CheckpointError(f"{json_path}: lacks {missing}")
    return RecordedCheckpoint(CheckpointRecord(**{name: document[name] for name in fields}), document["weights_sha256"])


def load_adaptor(run_dir: Path, kind: CheckpointKind = CheckpointKind.BEST, device: str = "cpu") -> LoadedAdaptor:
    """The trained Adaptor of a run folder, checked against its recorded hash, ready for inference."""
    record = read_record(run_dir, kind).record
    model = Adaptor(record.config())
    tensors, _, tensor_path, sha256 = _read_tensors(run_dir, kind)
    model.load_state_dict(_with_prefix(tensors, MODEL_PREFIX))
    return LoadedAdaptor(model.to(device).eval(), record, tensor_path, sha256)


def restore_training_state(
    run_dir: Path,
    kind: CheckpointKind,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> CheckpointRecord:
    """Puts model, optimiser, scheduler and random generators back where the checkpoint left them."""
    record = read_record(run_dir, kind).record
    tensors, metadata, tensor_path, _ = _read_tensors(run_dir, kind)
    if OPTIMIZER_GROUPS_KEY not in metadata:
        raise CheckpointError(f"{tensor_path}: holds an Adaptor's weights only, no training state to resume from")
    model.load_state_dict(_with_prefix(tensors, MODEL_PREFIX))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in _with_prefix(tensors, OPTIMIZER_PREFIX).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata[OPTIMIZER_GROUPS_KEY])})
    scheduler.load_state_dict(json.loads(metadata[SCHEDULER_KEY]))
    torch.set_rng_state(tensors[RNG_TORCH])
    cuda_states = _with_prefix(tensors, RNG_CUDA_PREFIX)
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_states[str(device)] for device in range(len(cuda_states))])
    return record


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_tensors(run_dir: Path, kind: CheckpointKind) -> tuple[dict[str, torch.Tensor], dict[str, str], Path, str]:
    """The tensor file's tensors and metadata, refused when its bytes differ from what the JSON recorded."""
    files = checkpoint_paths(run_dir, kind)
    tensor_path, json_path = files.tensors, files.record
    expected_sha256 = read_record(run_dir, kind).weights_sha256
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing, though {json_path.name} names it")
    sha256 = file_sha256(tensor_path)
    if sha256 != expected_sha256:
        raise CheckpointError(f"{tensor_path}: SHA-256 {sha256[:12]}... differs from {expected_sha256[:12]}... "
                              f"recorded in {json_path.name}; the files belong to different saves")
    with safe_open(tensor_path, framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = handle.metadata() or {}
    return tensors, metadata, tensor_path, sha256


def _with_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint record")

