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
from adaptor_vlp.cache_schema.writes import WriteFailed, remove_interrupted_writes, write_text_atomically, writing
from adaptor_vlp.train.batches import PairedData
from adaptor_vlp.train.checkpoint import (
    CheckpointKind,
    CheckpointRecord,
    checkpoint_paths,
    read_record,
    restore_training_state,
    save_checkpoint,
    save_weights,
)
from adaptor_vlp.train.encoding import autocast, encode_rows, resolve_device
from adaptor_vlp.train.history import LearningCurvePlotter, MetricsHistory
from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, count_trainable_parameters
from adaptor_vlp.train.pairs import StorePairing
from adaptor_vlp.train.recipe import Recipe
from adaptor_vlp.train.retrieval import retrieval_recall
from adaptor_vlp.train.stacked_model import StackMode

COMPLETED_MARKER = "completed.json"
TRAINING_PROVENANCE = "training"
"""The record's provenance entry, beside the stores' "image" and "text", saying how a run's steps were computed: a
`StackMode` other than exact (the solo run's arithmetic, which a record without the entry has)."""
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
        return checkpoint_paths(self.run_dir, CheckpointKind.BEST).tensors

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


DEFAULT_CHECKPOINT_SECONDS = 60.0
"""How often, at most, a run writes its checkpoints (besides after its last epoch): a killed run loses at most
about this much training, and a short run does not spend its time writing an optimiser state per epoch."""


def adamw(model: Adaptor, recipe: Recipe) -> torch.optim.AdamW:
    """The recipe's AdamW over the model's parameters, in its multi-tensor (foreach) form.

    foreach does the per-tensor loop's arithmetic (bit for bit on the CPU, tested against it) in a
    few calls over all parameters instead of about ten per parameter; CUDA picks it by default.
    """
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, foreach=True)


def train_adaptor(
    pairing: StorePairing,
    recipe: Recipe,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    on_epoch: Callable[[Mapping[str, float]], None] | None = None,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
) -> TrainResult:
    """Trains an Adaptor on the paired stores into `run_dir` and returns how it went.

    `on_epoch` sees each epoch's metrics row once it is in the run folder's metrics files. The
    checkpoints (best and last) are written after the first epoch that ends at least
    `checkpoint_seconds` after the previous write, and after the last epoch; 0 writes them every
    epoch. With `resume`, a run folder holding a last checkpoint continues from it (its recipe,
    data subset and store provenance must match this call's), redoing the epochs after it exactly;
    a finished run is returned as recorded. One run at a time holds the folder's lock
    (`<run_dir>.lock`); a failed write (a full disk) raises WriteFailed saying which epochs are
    kept and that --resume continues from them.
    """
    run_dir = Path(run_dir)
    with FolderLock.acquire(run_dir, "training"):
        try:
            return _train_in_locked_folder(pairing, recipe, run_dir, device, resume, on_epoch, checkpoint_seconds)
        except WriteFailed as error:
            raise WriteFailed(f"{error}. {_epochs_kept(run_dir)}") from error


def _epochs_kept(run_dir: Path) -> str:
    """What a run stopped by a failed write keeps, and how to continue it."""
    if not checkpoint_paths(run_dir, CheckpointKind.LAST).record.is_file():
        return "No epoch was complete; free space and run the same command again"
    record = read_record(run_dir, CheckpointKind.LAST).record
    return (f"Epochs 1-{record.epoch} are complete and kept (last checkpoint in {run_dir}); free space and rerun "
            f"the same command with --resume: it continues with epoch {record.epoch + 1}")


def _train_in_locked_folder(pairing: StorePairing, recipe: Recipe, run_dir: Path, device: str, resume: bool,
                            on_epoch: Callable[[Mapping[str, float]], None] | None,
                            checkpoint_seconds: float) -> TrainResult:
    """`train_adaptor` once the run folder's lock is held."""
    torch_device = resolve_device(device)
    check_run_folder(run_dir, resume)
    data = PairedData(pairing, recipe)
    with torch.random.fork_rng(devices=[]):
        run = start_run(run_dir, data, pairing.provenance(), torch_device, checkpoint_seconds)
        if isinstance(run, TrainResult):
            return run
        while (epoch := run.next_epoch()) is not None:
            started = time.perf_counter()
            train_loss = train_epoch(run.model, data, epoch, run.optimizer, run.scheduler, torch_device)
            row = run.end_epoch(epoch, train_loss, started)
            if on_epoch is not None:
                on_epoch(row)
        return run.finish()


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Refuses a folder that already holds a started or finished run unless the call resumes it.

    Deletes the temporary files of writes a killed run left unfinished (a checkpoint half written): the
    caller holds the folder's lock, so no live writer owns them.
    """
    if run_dir.is_dir():
        remove_interrupted_writes(run_dir)
    finished = read_completed(run_dir)
    if (finished or checkpoint_paths(run_dir, CheckpointKind.LAST).record.is_file()) and not resume:
        raise RunFolderError(f"{run_dir} already holds a {'finished' if finished else 'started'} run; "
                             "pass --resume to continue it, or choose another --out")


def start_run(run_dir: Path, data: PairedData, provenance: Mapping[str, Any], device: torch.device,
              checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
              stack_mode: StackMode = StackMode.EXACT) -> TrainingRun | TrainResult:
    """The run in `run_dir`, ready for its next epoch (fresh or from its last checkpoint), or its recorded result.

    Seeds the process's torch generator with the recipe's seed, initialises the Adaptor from it,
    and on resume puts the generator where the checkpoint left it; the caller forks the generator
    around the run (`torch.random.fork_rng`), and the run's dropout draws continue from there.
    `stack_mode` is how the caller computes the steps (`train.stacked`); a mode other than exact
    is recorded in the provenance, and a resume under another mode than the record's is refused.
    """
    recipe = data.recipe
    if stack_mode is not StackMode.EXACT:
        provenance = {**provenance, TRAINING_PROVENANCE: {"stack_mode": stack_mode.value}}
    finished = read_completed(run_dir)
    has_checkpoint = checkpoint_paths(run_dir, CheckpointKind.LAST).record.is_file()
    if has_checkpoint:
        _check_resumable(run_dir, recipe, provenance, data.subset.to_json())
    if finished:
        return finished
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run_dir / SUBSET_IDS_FILE, "".join(f"{sample_id}\n" for sample_id in data.chosen_image_ids))
    torch.manual_seed(recipe.seed)
    model = Adaptor(recipe.adaptor_config(data.image.dim, data.text.dim)).to(device)
    optimizer = adamw(model, recipe)
    scheduler = linear_warmup_decay(optimizer, data.steps_per_epoch * recipe.epochs, recipe.warmup_fraction)
    progress = _Progress()
    if has_checkpoint:
        progress = _Progress.of(restore_training_state(run_dir, CheckpointKind.LAST, model, optimizer, scheduler))
    return TrainingRun(run_dir, data, provenance, device, model, optimizer, scheduler, progress, checkpoint_seconds)


class TrainingRun:
    """One run folder's Adaptor, optimiser, schedule and bookkeeping between epochs, as if trained alone.

    Whoever drives the training steps (`train_adaptor` one run at a time, `train.stacked` many at
    once) asks `next_epoch` which epoch to train (None once the epochs are done or early stopping
    has struck), trains it, and hands the mean training loss to `end_epoch`, which validates,
    records the metrics and writes checkpoints when they are due; `finish` writes the final
    checkpoints, the learning curve and the completion marker. Checkpoints record the process's
    torch generators, which must hold this run's dropout stream while `end_epoch` and `finish` run.
    """

    def __init__(self, run_dir: Path, data: PairedData, provenance: Mapping[str, Any], device: torch.device,
                 model: Adaptor, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 progress: _Progress, checkpoint_seconds: float) -> None:
        self.run_dir = run_dir
        self.data = data
        self.recipe = data.recipe
        self.provenance = provenance
        self.device = device
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.progress = progress
        self.checkpoint_seconds = checkpoint_seconds
        self.trainable_parameters = count_trainable_parameters(model)
        self.history = MetricsHistory(run_dir, keep_through_epoch=progress.epoch)
        self.stopped_early = False
        self._record: CheckpointRecord | None = None
        self._best_record: CheckpointRecord | None = None
        self._best_weights: Mapping[str, torch.Tensor] | None = None
        self._last_saved = True
        self._saved_at = time.perf_counter()
        self._clock = time.perf_counter()

    def next_epoch(self) -> int | None:
        """The epoch to train next, or None when the run is done (all epochs, or no improvement for `patience`)."""
        recipe, progress = self.recipe, self.progress
        if progress.epoch >= recipe.epochs:
            return None
        if recipe.patience and progress.epoch - progress.best_epoch >= recipe.patience:
            self.stopped_early = True
            return None
        return progress.epoch + 1

    def end_epoch(self, epoch: int, train_loss: float, started: float) -> dict[str, float]:
        """Validates the epoch just trained (begun at perf_counter `started`), records it; returns its metrics row."""
        row = {
            "epoch": epoch,
            "step": epoch * self.data.steps_per_epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "logit_scale": self.model.clamped_logit_scale().exp().item(),
            "train_loss": train_loss,
            **_validate(self.model, self.data, self.device),
            "seconds": time.perf_counter() - started,
        }
        self.progress = self.progress.after(epoch, row, self.recipe, time.perf_counter() - self._clock)
        self._clock = time.perf_counter()
        self.history.append(row)
        self._record = CheckpointRecord(
            adaptor_config=self.model.config.to_dict(), recipe=self.recipe.to_dict(), epoch=epoch, step=row["step"],
            metrics=row, best_epoch=self.progress.best_epoch, best_metrics=self.progress.best_metrics,
            provenance=self.provenance, data_subset=self.data.subset.to_json(),
            trainable_parameters=self.trainable_parameters, wall_seconds=self.progress.wall_seconds,
        )
        self._last_saved = False
        due = time.perf_counter() - self._saved_at >= self.checkpoint_seconds
        if self.progress.best_epoch == epoch:
            weights = self.model.state_dict()
            self._best_weights = weights if due else {name: value.detach().clone() for name, value in weights.items()}
            self._best_record = self._record
        if due:
            self._save_checkpoints()
        return row

    def finish(self, plotter: LearningCurvePlotter | None = None) -> TrainResult:
        """Writes what is not saved yet, the learning curve (by `plotter` when given) and the completion marker."""
        if not self._last_saved:
            self._save_checkpoints()
        self.history.plot(plotter)
        progress = self.progress
        result = TrainResult(self.run_dir, progress.best_epoch, progress.best_metrics, progress.epoch,
                             self.stopped_early, self.trainable_parameters, progress.wall_seconds)
        write_text_atomically(self.run_dir / COMPLETED_MARKER, json.dumps(result.to_json(), indent=1))
        return result

    def _save_checkpoints(self) -> None:
        """The best epoch's weights (when they changed since the last save), then the full last checkpoint.

        The best checkpoint holds weights alone: resuming reads only the last one, whose record
        names the best epoch, so a run resumed from an earlier last checkpoint rewrites the same
        best weights when it gets there again.
        """
        if self._best_weights is not None and self._best_record is not None:
            save_weights(self.run_dir, CheckpointKind.BEST, self._best_weights, self._best_record)
            self._best_weights = None
        if self._record is not None:
            save_checkpoint(self.run_dir, CheckpointKind.LAST, self.model, self.optimizer, self.scheduler,
                            self._record)
        self._last_saved = True
        self._saved_at = time.perf_counter()


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
    record = read_record(run_dir, CheckpointKind.LAST).record
    for name, value in recipe.to_dict().items():
        if record.recipe.get(name) != value:
            raise RunFolderError(f"{run_dir}: was started with {name}={record.recipe.get(name)!r}, "
                                 f"this resume asks for {value!r}; resume with the original settings")
    recorded_mode = record.provenance.get(TRAINING_PROVENANCE, {}).get("stack_mode", StackMode.EXACT.value)
    asked_mode = provenance.get(TRAINING_PROVENANCE, {}).get("stack_mode", StackMode.EXACT.value)
    if recorded_mode != asked_mode:
        raise RunFolderError(f"{run_dir}: was trained with stack_mode={recorded_mode!r}, this resume asks for "
                             f"{asked_mode!r}; resume with --stack-mode {recorded_mode}")
    for modality, fields in provenance.items():
        if modality == TRAINING_PROVENANCE:
            continue
        for name, value in fields.items():
            recorded = record.provenance[modality].get(name)
            if name not in PROVENANCE_IGNORED_ON_RESUME and recorded != value:
                raise RunFolderError(f"{run_dir}: was trained on a {modality} store with {name}={recorded!r}, "
                                     f"the store now has {value!r}; resume on the original stores")
    if dict(record.data_subset) != dict(data_subset):
        raise RunFolderError(f"{run_dir}: was trained on data subset {dict(record.data_subset)}, "
                             f"this resume selects {dict(data_subset)}")
