"""The segmentation decoder's training loop, as the published runs trained theirs.

AdamW with a per-epoch cosine schedule (CosineAnnealingWarmRestarts), validation every few
epochs, the kept weights those of the best validated epoch, and early stopping after a number of
validations without an improvement of at least `min_improvement` (Lightning's ModelCheckpoint and
EarlyStopping, segment.py:147-151). Training inputs come as one tensor per augmented view of the
same images; epoch e reads view (e - 1) mod K, so each epoch sees a different view.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from adaptor_vlp.evaluate.early_stopping import predict_in_batches
from adaptor_vlp.evaluate.segmentation_loss import LossFunction
from adaptor_vlp.evaluate.segmentation_protocol import SegmentationProtocol, SelectionMetric


@dataclass(frozen=True)
class SegmentationTraining:
    """Which epoch's weights were kept (1-based), their validation score, the epochs run and those validated.

    `best_score` is the selection metric: the published validation Dice, or minus the validation loss.
    """

    best_epoch: int
    best_score: float
    epochs_run: int
    validated_epochs: tuple[int, ...]


def published_dice_per_image(probabilities: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """models/segmenter.py get_dice (87-104) per image: 1 or 0 for an empty mask (predicted empty or not), the Dice
    of the thresholded prediction otherwise."""
    predicted = (probabilities.flatten(1) > threshold).float()
    truth = (masks.flatten(1).float() > 0.5).float()
    positive = truth.sum(dim=1) >= 1
    overlap = (predicted * truth).sum(dim=1)
    dice = 2 * overlap / (predicted + truth).sum(dim=1).clamp(min=1e-12)
    return torch.where(positive, dice, (predicted.sum(dim=1) == 0).float())


def train_segmenter(model: nn.Module, loss_fn: LossFunction, train_views: Sequence[torch.Tensor],
                    train_masks: Sequence[torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                    protocol: SegmentationProtocol, seed: int) -> SegmentationTraining:
    """Trains `model` in place and leaves it holding, in eval mode, the weights of the best validated epoch.

    `train_views[k]` and `train_masks[k]` are view k of every training image and its mask. Validation runs
    after every `validation_interval`-th epoch (and once after the last, if none ran). A shuffled final batch
    of a single sample is skipped, since BatchNorm cannot train on it.
    """
    if not train_views or len(train_views) != len(train_masks):
        raise ValueError(f"got {len(train_views)} training views and {len(train_masks)} mask views; "
                         "give one mask tensor per view")
    n_train = len(train_views[0])
    if n_train < 2 or any(len(view) != n_train for view in (*train_views, *train_masks)):
        raise ValueError(f"training needs at least 2 samples, the same in every view; got "
                         f"{[len(view) for view in train_views]}")
    if len(val[0]) == 0:
        raise ValueError("the validation split is empty; model selection needs validation samples")
    optimiser = torch.optim.AdamW(model.parameters(), lr=protocol.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=protocol.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimiser, T_0=protocol.cosine_period_epochs, T_mult=1, eta_min=protocol.min_learning_rate)
    shuffler = torch.Generator().manual_seed(seed)
    kept = _Selection(copy.deepcopy(model.state_dict()))
    stopper_best, waited, epoch = -math.inf, 0, 0
    validated: list[int] = []
    while epoch < protocol.max_epochs and waited < max(protocol.patience_validations, 1):
        epoch += 1
        view = (epoch - 1) % len(train_views)
        model.train()
        for rows in torch.randperm(n_train, generator=shuffler).split(protocol.batch_size):
            if len(rows) < 2:
                continue
            optimiser.zero_grad()
            loss_fn(model(train_views[view][rows]), train_masks[view][rows]).backward()
            optimiser.step()
        schedule.step()
        due = epoch % protocol.validation_interval == 0 or (epoch == protocol.max_epochs and not validated)
        if not due:
            continue
        score = _validation_score(model, loss_fn, val, protocol)
        validated.append(epoch)
        kept.offer(epoch, score, model)
        if score - protocol.min_improvement > stopper_best:
            stopper_best, waited = score, 0
        else:
            waited += 1
    model.load_state_dict(kept.state)
    model.eval()
    return SegmentationTraining(best_epoch=kept.epoch, best_score=kept.score, epochs_run=epoch,
                                validated_epochs=tuple(validated))


class _Selection:
    """The best validated weights so far (a strictly higher score replaces them, as ModelCheckpoint does)."""

    def __init__(self, state: dict) -> None:
        self.state, self.epoch, self.score = state, 0, -math.inf

    def offer(self, epoch: int, score: float, model: nn.Module) -> None:
        if score > self.score:
            self.state, self.epoch, self.score = copy.deepcopy(model.state_dict()), epoch, score


def _validation_score(model: nn.Module, loss_fn: LossFunction, val: tuple[torch.Tensor, torch.Tensor],
                      protocol: SegmentationProtocol) -> float:
    inputs, masks = val
    logits = predict_in_batches(model, inputs, protocol.batch_size)
    if protocol.selection is SelectionMetric.PUBLISHED_DICE:
        return float(published_dice_per_image(torch.sigmoid(logits), masks).mean())
    with torch.no_grad():
        losses = [float(loss_fn(batch_logits, batch_masks)) * len(batch_masks)
                  for batch_logits, batch_masks in zip(logits.split(protocol.batch_size),
                                                       masks.split(protocol.batch_size))]
    return -sum(losses) / len(masks)
