"""The one training loop the torch heads share: seeded AdamW epochs, best-validation-loss weights.

Both the MLP classification head and the segmentation decoder are small modules trained from
in-memory tensors, so they share this loop rather than each keeping a copy.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser and stopping settings: training stops after `patience` epochs without a new
    lowest validation loss, or after `max_epochs`."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10


@dataclass(frozen=True)
class TrainingOutcome:
    """Which epoch's weights were kept (1-based), their validation loss, and epochs run."""

    best_epoch: int
    best_val_loss: float
    epochs_run: int


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
) -> TrainingOutcome:
    """Trains `model` in place on (inputs, targets) pairs and leaves it holding, in eval mode,
    the weights of the epoch with the lowest validation loss.

    A final shuffled batch of a single sample is skipped, since BatchNorm cannot train on it.
    """
    train_inputs, train_targets = train
    if len(train_inputs) < 2:
        raise ValueError(f"training needs at least 2 samples, got {len(train_inputs)}")
    if len(val[0]) == 0:
        raise ValueError("the validation split is empty; early stopping needs validation samples")
    if settings.max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1, got {settings.max_epochs}")
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    shuffler = torch.Generator().manual_seed(seed)
    best_epoch, best_val_loss = 0, float("inf")
    best_state = copy.deepcopy(model.state_dict())
    epochs_run = 0
    while epochs_run < settings.max_epochs and epochs_run - best_epoch < settings.patience:
        epochs_run += 1
        model.train()
        for rows in torch.randperm(len(train_inputs), generator=shuffler).split(settings.batch_size):
            if len(rows) < 2:
                continue
            optimiser.zero_grad()
            loss_fn(model(train_inputs[rows]), train_targets[rows]).backward()
            optimiser.step()
        val_loss = _mean_loss(model, loss_fn, val, settings.batch_size)
        if val_loss < best_val_loss:
            best_epoch, best_val_loss = epochs_run, val_loss
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return TrainingOutcome(best_epoch=best_epoch, best_val_loss=best_val_loss, epochs_run=epochs_run)


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
