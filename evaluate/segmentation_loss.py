"""The segmentation losses a `SegmentationProtocol` names, on (B, H, W) logits and (B, H, W) masks.

`published_mixed_loss` is MGCA's `MixedLoss` as the published runs used it (--original_dice_loss,
MGCA/mgca/utils/segmentation_loss.py): 10 x focal loss (gamma 2) minus the log of one smoothed
soft Dice over the whole batch, so the Dice term weighs a batch's pixels together, not its images.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional

from adaptor_vlp.evaluate.segmentation_protocol import LossName

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FOCAL_WEIGHT = 10.0
"""segment.py:192 --alpha default 10, passed to MixedLoss(alpha=...) (models/segmenter.py:33)."""
FOCAL_GAMMA = 2.0
"""segmentation_loss.py:79 MixedLoss(gamma=2.0)."""
DICE_SMOOTHING = 1.0
"""segmentation_loss.py:17 dice_loss: smooth = 1.0."""


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Mean over pixels of (1 - p_t)^gamma x binary cross-entropy, p_t the probability of the true class
    (segmentation_loss.py:54-75, computed with torch's stable BCE and log-sigmoid)."""
    cross_entropy = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    modulation = torch.exp(gamma * functional.logsigmoid(-logits * (2 * targets - 1)))
    return (modulation * cross_entropy).mean()


def batch_soft_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One smoothed soft Dice over every pixel of the batch (segmentation_loss.py:7-24)."""
    probabilities = torch.sigmoid(logits).flatten()
    targets = targets.flatten()
    overlap = (probabilities * targets).sum()
    return (2 * overlap + DICE_SMOOTHING) / (probabilities.sum() + targets.sum() + DICE_SMOOTHING)


def published_mixed_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """10 x focal loss - log(batch soft Dice) (segmentation_loss.py:78-91 with modified_dice_loss=False)."""
    targets = masks.to(logits.dtype)
    return FOCAL_WEIGHT * focal_loss(logits, targets) - torch.log(batch_soft_dice(logits, targets))


def dice_bce_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus the mean per-image soft Dice loss, smoothed by 1 so that an
    empty mask is learnt as "predict nothing" rather than being undefined."""
    targets = masks.to(logits.dtype)
    bce = functional.binary_cross_entropy_with_logits(logits, targets)
    probabilities = torch.sigmoid(logits).flatten(1)
    targets = targets.flatten(1)
    overlap = (probabilities * targets).sum(dim=1)
    dice = (2 * overlap + DICE_SMOOTHING) / (probabilities.sum(dim=1) + targets.sum(dim=1) + DICE_SMOOTHING)
    return bce + (1 - dice).mean()


LOSSES: dict[LossName, LossFunction] = {LossName.PUBLISHED_MIXED: published_mixed_loss,
                                        LossName.DICE_BCE: dice_bce_loss}


def loss_function(name: LossName) -> LossFunction:
    """The loss called `name`."""
    return LOSSES[name]
