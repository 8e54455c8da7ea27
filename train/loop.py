"""The training loop: AdamW with warm-up and linear decay, validation each epoch, early stopping, resume.

Plain PyTorch. Reproducibility is part of the contract: with the same recipe and stores, a CPU run
gives bitwise the same weights, and a run stopped after any epoch and resumed gives exactly the
weights of an uninterrupted one (the last checkpoint carries model, optimiser, scheduler and the
torch generator; every epoch's batches are a pure function of (seed, epoch)).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from adaptor_vlp.cache_schema.lock import FolderLock
from adaptor_vlp.cache_schema.writes import WriteFailed, write_text_atomically, writing
from adaptor_vlp.train.batches import PairedData
from adaptor_vlp.train.checkpoint import (
    CheckpointKind,
    CheckpointRecord,
    checkpoint_paths,
    read_record,
    restore_training_state,
    save_checkpoint,
)
from adaptor_vlp.train.encoding import autocast, encode_rows, resolve_device
from adaptor_vlp.train.history import MetricsHistory
from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, count_trainable_parameters
from adaptor_vlp.train.pairs import StorePairing
from adaptor_vlp.train.recipe import Recipe
from adaptor_vlp.train.retrieval import retrieval_recall

COMPLETED_MARKER = "completed.json"
SUBSET_IDS_FILE = "data_subset.txt"
PROVENANCE_IGNORED_ON_RESUME = frozenset({"created"})


class RunFolderError(RuntimeError):
    """The output folder holds another run, or a resume asks for different settings than it was started with."""


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite, typically from too high a learning rate."""


@dataclass(frozen=True)
class TrainResult:
    """How a finished run went: best epoch and its validation metrics, size, duration, where things are."""

    run_dir: Path
    best_epoch: int
    best_metrics: Mapping[str, float]
    epochs_run: int
    stopped_early: bool
    trainable_parameters: int
    wall_seconds: float

    @property
    def best_checkpoint(self) -> Path:
        return checkpoint_paths(self.run_dir, CheckpointKind.BEST)[0]

    @property
    def last_checkpoint(self) -> Path:
        return checkpoint_paths(self.run_dir, CheckpointKind.LAST)[0]

    def to_json(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "best_metrics": dict(self.best_metrics),
                "epochs_run": self.epochs_run, "stopped_early": self.stopped_early,
                "trainable_parameters": self.trainable_parameters, "wall_seconds": self.wall_seconds}


def read_completed(run_dir: Path) -> TrainResult | None:
    """The result recorded by a finished run in `run_dir`, or None when it has not finished."""
    marker = Path(run_dir) / COMPLETED_MARKER
    if not marker.is_file():
        return None
    return TrainResult(run_dir=Path(run_dir), **json.loads(marker.read_text()))


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly over the first `warmup_fraction` of steps, then falling linearly towards 0.

    Step s (from 0) runs at (s + 1) / warmup of the peak during warm-up (no wasted step at lr 0),
    then at (total - s) / (total - warmup), so the last step still moves.
    """
    warmup = min(total_steps - 1, math.ceil(warmup_fraction * total_steps)) if warmup_fraction else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / (total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_adaptor(
    pairing: StorePairing,
    recipe: Recipe,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    on_epoch: Callable[[Mapping[str, float]], None] | None = None,
) -> TrainResult:
    """Trains an Adaptor on the paired stores into `run_dir` and returns how it went.

    `on_epoch` sees each epoch's metrics row after that epoch's checkpoints are on disk. With
    `resume`, a run folder holding a last checkpoint continues from it (its recipe, data subset and
    store provenance must match this call's); a finished run is returned as recorded. One run at a
    time holds the folder's lock (`<run_dir>.lock`); a failed write (a full disk) raises
    WriteFailed saying which epochs are kept and that --resume continues from them.
    """
    run_dir = Path(run_dir)
    with FolderLock.acquire(run_dir, "training"):
        try:
            return _train_in_locked_folder(pairing, recipe, run_dir, device, resume, on_epoch)
        except WriteFailed as error:
            raise WriteFailed(f"{error}. {_epochs_kept(run_dir)}") from error


def _epochs_kept(run_dir: Path) -> str:
    """What a run stopped by a failed write keeps, and how to continue it."""
    if not checkpoint_paths(run_dir, CheckpointKind.LAST)[1].is_file():
        return "No epoch was complete; free space and run the same command again"
    record, _ = read_record(run_dir, CheckpointKind.LAST)
    return (f"Epochs 1-{record.epoch} are complete and kept (last checkpoint in {run_dir}); free space and rerun "
            f"the same command with --resume: it continues with epoch {record.epoch + 1}")


def _train_in_locked_folder(pairing: StorePairing, recipe: Recipe, run_dir: Path, device: str, resume: bool,
                            on_epoch: Callable[[Mapping[str, float]], None] | None) -> TrainResult:
    """`train_adaptor` once the run folder's lock is held."""
    torch_device = resolve_device(device)
    finished = read_completed(run_dir)
    has_checkpoint = checkpoint_paths(run_dir, CheckpointKind.LAST)[1].is_file()
    if (finished or has_checkpoint) and not resume:
        raise RunFolderError(f"{run_dir} already holds a {'finished' if finished else 'started'} run; "
                             "pass --resume to continue it, or choose another --out")
    data = PairedData(pairing, recipe)
    config = recipe.adaptor_config(data.image.dim, data.text.dim)
    provenance = pairing.provenance()
    if has_checkpoint:
        _check_resumable(run_dir, recipe, provenance, data.subset.to_json())
    if finished:
        return finished
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run_dir / SUBSET_IDS_FILE, "".join(f"{sample_id}\n" for sample_id in data.chosen_image_ids))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = Adaptor(config).to(torch_device)
        parameters = count_trainable_parameters(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = linear_warmup_decay(optimizer, data.steps_per_epoch * recipe.epochs, recipe.warmup_fraction)
        progress = _Progress()
        if has_checkpoint:
            progress = _Progress.of(restore_training_state(run_dir, CheckpointKind.LAST, model, optimizer, scheduler))
        history = MetricsHistory(run_dir, keep_through_epoch=progress.epoch)
        clock = time.perf_counter()
        stopped_early = False
        for epoch in range(progress.epoch + 1, recipe.epochs + 1):
            if recipe.patience and progress.epoch - progress.best_epoch >= recipe.patience:
                stopped_early = True
                break
            row = _run_epoch(model, data, epoch, optimizer, scheduler, torch_device)
            progress = progress.after(epoch, row, recipe, time.perf_counter() - clock)
            clock = time.perf_counter()
            history.append(row)
            record = CheckpointRecord(
                adaptor_config=config.to_dict(), recipe=recipe.to_dict(), epoch=epoch, step=row["step"],
                metrics=row, best_epoch=progress.best_epoch, best_metrics=progress.best_metrics,
                provenance=provenance, data_subset=data.subset.to_json(), trainable_parameters=parameters,
                wall_seconds=progress.wall_seconds,
            )
            kinds = [CheckpointKind.BEST] if progress.best_epoch == epoch else []
            for kind in kinds + [CheckpointKind.LAST]:
                save_checkpoint(run_dir, kind, model, optimizer, scheduler, record)
            if on_epoch is not None:
                on_epoch(row)
        history.plot()
    result = TrainResult(run_dir, progress.best_epoch, progress.best_metrics, progress.epoch, stopped_early,
                         parameters, progress.wall_seconds)
    write_text_atomically(run_dir / COMPLETED_MARKER, json.dumps(result.to_json(), indent=1))
    return result


@dataclass(frozen=True)
class _Progress:
    """Where a run stands: last finished epoch, best epoch so far and its metrics, time spent."""

    epoch: int = 0
    best_epoch: int = 0
    best_metrics: Mapping[str, float] | None = None
    wall_seconds: float = 0.0

    @classmethod
    def of(cls, record: CheckpointRecord) -> _Progress:
        return cls(record.epoch, record.best_epoch, record.best_metrics, record.wall_seconds)

    def after(self, epoch: int, row: Mapping[str, float], recipe: Recipe, seconds: float) -> _Progress:
        """Progress once `epoch` with metrics `row` is done; it becomes the best if it beats the best so far."""
        metric = recipe.select_by.metric
        best = None if self.best_metrics is None else self.best_metrics[metric]
        improved = recipe.select_by.improves(row[metric], best)
        return _Progress(epoch, epoch if improved else self.best_epoch,
                         dict(row) if improved else self.best_metrics, self.wall_seconds + seconds)


def _run_epoch(model: Adaptor, data: PairedData, epoch: int, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> dict[str, float]:
    """Trains one epoch, validates, and returns the epoch's metrics row."""
    started = time.perf_counter()
    train_loss = train_epoch(model, data, epoch, optimizer, scheduler, device)
    return {
        "epoch": epoch,
        "step": epoch * data.steps_per_epoch,
        "lr": scheduler.get_last_lr()[0],
        "logit_scale": model.clamped_logit_scale().exp().item(),
        "train_loss": train_loss,
        **_validate(model, data, device),
        "seconds": time.perf_counter() - started,
    }


def train_epoch(model: Adaptor, data: PairedData, epoch: int, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> float:
    """One pass over the epoch's batches; returns the mean training loss."""
    model.train()
    losses = []
    for batch in data.epoch_batches(epoch):
        batch = batch.to(device)
        with autocast(device):
            output = model(batch.image, batch.text, batch.image_mask, batch.text_mask)
            loss = contrastive_loss(output.image_embeds.float(), output.text_embeds.float(), output.logit_scale,
                                    data.recipe.image_weight).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), data.recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TrainingDiverged(f"training diverged in epoch {epoch} (loss {losses[-1]}); lower --lr")
    return float(np.mean(losses))


@torch.no_grad()
def _validate(model: Adaptor, data: PairedData, device: torch.device) -> dict[str, float]:
    """Validation loss (fixed batches of about the training batch size) and retrieval recall@1/5/10."""
    model.eval()
    recipe, split = data.recipe, data.validate
    texts, text_for_image = np.unique(split.text_rows, return_inverse=True)
    image_embeds = encode_rows(model.encode_image, data.image, split.image_rows, recipe.batch_size, device)
    text_embeds = encode_rows(model.encode_text, data.text, texts, recipe.batch_size, device)
    scale = model.clamped_logit_scale()
    order = np.random.default_rng(recipe.seed).permutation(len(split))
    batches = np.array_split(order, max(1, round(len(split) / recipe.batch_size)))
    losses = [contrastive_loss(image_embeds[b], text_embeds[text_for_image[b]], scale, recipe.image_weight).loss
              for b in batches]
    loss = sum(float(value) * len(b) for value, b in zip(losses, batches)) / len(split)
    recall = retrieval_recall(image_embeds @ text_embeds.T, text_for_image)
    return {"val_loss": loss, **recall.as_metrics("val")}


def _check_resumable(run_dir: Path, recipe: Recipe, provenance: Mapping[str, Any],
                     data_subset: Mapping[str, Any]) -> None:
    """Refuses to resume a run with other settings, naming the first one that differs."""
    record, _ = read_record(run_dir, CheckpointKind.LAST)
    for name, value in recipe.to_dict().items():
        if record.recipe.get(name) != value:
            raise RunFolderError(f"{run_dir}: was started with {name}={record.recipe.get(name)!r}, "
                                 f"this resume asks for {value!r}; resume with the original settings")
    for modality, fields in provenance.items():
        for name, value in fields.items():
            recorded = record.provenance[modality].get(name)
            if name not in PROVENANCE_IGNORED_ON_RESUME and recorded != value:
                raise RunFolderError(f"{run_dir}: was trained on a {modality} store with {name}={recorded!r}, "
                                     f"the store now has {value!r}; resume on the original stores")
    if dict(record.data_subset) != dict(data_subset):
        raise RunFolderError(f"{run_dir}: was trained on data subset {dict(record.data_subset)}, "
                             f"this resume selects {dict(data_subset)}")
