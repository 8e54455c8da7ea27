"""The one training loop the torch heads share: seeded AdamW epochs, the best validation epoch's weights.

Both the MLP classification head and the segmentation decoder are small modules trained from
in-memory tensors, so they share this loop rather than each keeping a copy. By default it keeps
the epoch with the lowest validation loss; a protocol's recipe (`evaluate.protocol_heads`) can
instead make it train as the published finetuner did: a cosine schedule with warm restarts
stepped once per epoch, validation every few epochs, early stopping on a validation metric with
a minimum improvement, and the best-metric epoch's weights kept (Lightning's EarlyStopping and
ModelCheckpoint in mode max).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ValidationMetric = Callable[[torch.Tensor, torch.Tensor], float]
"""(outputs, targets) of the whole validation split -> a score where higher is better (AUROC, accuracy)."""


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser, schedule and stopping settings.

    Training stops after `patience` validations without an improvement, or after `max_epochs`.
    Without `select_on_metric` an improvement is a new lowest validation loss; with it, a
    validation metric above the best so far by more than `min_delta` (the weights kept are those
    of the highest metric). `schedule_t0` (epochs) turns on CosineAnnealingWarmRestarts(T_0,
    T_mult=1, eta_min), stepped once after every epoch.
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10
    schedule_t0: int | None = None
    eta_min: float = 0.0
    validate_every: int = 1
    min_delta: float = 0.0
    select_on_metric: bool = False


@dataclass(frozen=True)
class TrainingOutcome:
    """Which epoch's weights were kept (1-based), their validation loss (and metric, if selected on one), and
    epochs run."""

    best_epoch: int
    best_val_loss: float
    epochs_run: int
    best_val_metric: float | None = None


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Seeds torch's CPU generator inside the block and restores the caller's state after it,
    so that weight initialisation and dropout are reproducible without touching global state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_with_early_stopping(
    model: nn.Module,
    loss_fn: LossFn,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainingSettings,
    seed: int,
    val_metric: ValidationMetric | None = None,
) -> TrainingOutcome:
    """Trains `model` in place on (inputs, targets) pairs and leaves it holding, in eval mode,
    the weights of the best validated epoch (see `TrainingSettings`; `val_metric` is needed
    with `select_on_metric`).

    A final shuffled batch of a single sample is skipped, since BatchNorm cannot train on it.
    """
    train_inputs, train_targets = train
    if len(train_inputs) < 2:
        raise ValueError(f"training needs at least 2 samples, got {len(train_inputs)}")
    if len(val[0]) == 0:
        raise ValueError("the validation split is empty; early stopping needs validation samples")
    if settings.max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1, got {settings.max_epochs}")
    if settings.select_on_metric and val_metric is None:
        raise ValueError("select_on_metric needs a validation metric")
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = (CosineAnnealingWarmRestarts(optimiser, T_0=max(1, settings.schedule_t0), T_mult=1,
                                            eta_min=settings.eta_min)
                if settings.schedule_t0 is not None else None)
    shuffler = torch.Generator().manual_seed(seed)
    best = _Best(settings)
    best_state = copy.deepcopy(model.state_dict())
    epochs_run = 0
    while epochs_run < settings.max_epochs and best.validations_without_improvement < settings.patience:
        epochs_run += 1
        model.train()
        for rows in torch.randperm(len(train_inputs), generator=shuffler).split(settings.batch_size):
            if len(rows) < 2:
                continue
            optimiser.zero_grad()
            loss_fn(model(train_inputs[rows]), train_targets[rows]).backward()
            optimiser.step()
        if schedule is not None:
            schedule.step()
        if epochs_run % settings.validate_every == 0 or epochs_run == settings.max_epochs:
            val_loss = _mean_loss(model, loss_fn, val, settings.batch_size)
            metric = (val_metric(predict_in_batches(model, val[0], settings.batch_size), val[1])
                      if settings.select_on_metric else None)
            if best.update(epochs_run, val_loss, metric):
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return TrainingOutcome(best_epoch=best.epoch, best_val_loss=best.loss, epochs_run=epochs_run,
                           best_val_metric=best.metric)


class _Best:
    """The best validation so far and the count of validations since the last improvement.

    By loss: a lower loss is best and an improvement. By metric (Lightning's ModelCheckpoint and
    EarlyStopping, mode max): a higher metric is best; only a rise of more than `min_delta` over
    the early-stopping reference resets the count.
    """

    def __init__(self, settings: TrainingSettings) -> None:
        self.on_metric = settings.select_on_metric
        self.min_delta = settings.min_delta
        self.epoch, self.loss, self.metric = 0, float("inf"), None
        self.stopping_reference = float("-inf")
        self.validations_without_improvement = 0

    def update(self, epoch: int, loss: float, metric: float | None) -> bool:
        """Records a validation; True when its weights are the new best to keep."""
        if not self.on_metric:
            improved = loss < self.loss
            self.validations_without_improvement = 0 if improved else self.validations_without_improvement + 1
            if improved:
                self.epoch, self.loss = epoch, loss
            return improved
        if metric - self.min_delta > self.stopping_reference:
            self.stopping_reference = metric
            self.validations_without_improvement = 0
        else:
            self.validations_without_improvement += 1
        if self.metric is None or metric > self.metric:
            self.epoch, self.loss, self.metric = epoch, loss, metric
            return True
        return False


def predict_in_batches(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs for `inputs` in eval mode, computed batch by batch without gradients."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(batch) for batch in inputs.split(batch_size)])


def _mean_loss(
    model: nn.Module, loss_fn: LossFn, data: tuple[torch.Tensor, torch.Tensor], batch_size: int
) -> float:
    inputs, targets = data
    model.eval()
    total = 0.0
    with torch.no_grad():
        for batch_inputs, batch_targets in zip(inputs.split(batch_size), targets.split(batch_size)):
            total += float(loss_fn(model(batch_inputs), batch_targets)) * len(batch_inputs)
    return total / len(inputs)
