"""The Adaptor's contrastive loss: CLIP-style InfoNCE with the two directions weighted unequally.

With unit-norm embeddings and the log logit scale s, ``logits = exp(s) * text @ image.T``: row i
holds text i's similarity to every image in the batch, and the matching image sits on the
diagonal. The two directions are

- ``image_loss``: for each text, cross-entropy over the images (the rows of ``logits``), i.e.
  retrieving the image that belongs to a text. It is weighted by ``image_weight`` (0.75).
- ``text_loss``: for each image, cross-entropy over the texts (the columns of ``logits``), i.e.
  retrieving the text that belongs to an image. It is weighted by ``1 - image_weight``.

HuggingFace's ``clip_loss``, which the published Adaptor code calls, averages the same two
terms with equal weights and names them the other way round (its ``caption_loss`` is the
cross-entropy over the rows of ``logits_per_text``, our ``image_loss``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class LossOutput:
    """The weighted loss and its two directions (each a mean over the batch)."""

    loss: Tensor
    image_loss: Tensor
    text_loss: Tensor


def contrastive_loss(
    image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor, image_weight: float = 0.75
) -> LossOutput:
    """Weighted InfoNCE over a batch of paired unit-norm (B, P) embeddings; ``logit_scale`` is the log scale."""
    _check_image_weight(image_weight)
    if image_embeds.dim() != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"contrastive_loss: image_embeds {tuple(image_embeds.shape)} and text_embeds "
            f"{tuple(text_embeds.shape)} must both be (batch, dim) with row i of each forming a pair."
        )
    logits_per_text = logit_scale.exp() * text_embeds @ image_embeds.T
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    image_loss = F.cross_entropy(logits_per_text, targets)
    text_loss = F.cross_entropy(logits_per_text.T, targets)
    loss = image_weight * image_loss + (1.0 - image_weight) * text_loss
    return LossOutput(loss=loss, image_loss=image_loss, text_loss=text_loss)


def stacked_contrastive_loss(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor,
                             image_weights: Tensor) -> Tensor:
    """`contrastive_loss(image_embeds[g], text_embeds[g], logit_scale[g], image_weights[g]).loss` for every g at once.

    (G, B, P) embeddings, (G,) log scales and weights; returns the (G,) losses. The same
    arithmetic in batched calls (a stacked sweep's fast form), so equal to the per-point losses
    within float rounding, not bit for bit.
    """
    points, batch = image_embeds.shape[:2]
    logits_per_text = torch.bmm(logit_scale.exp().view(-1, 1, 1) * text_embeds, image_embeds.mT)
    targets = torch.arange(batch, device=logits_per_text.device).repeat(points)
    image_loss = F.cross_entropy(logits_per_text.reshape(points * batch, batch), targets, reduction="none")
    text_loss = F.cross_entropy(logits_per_text.mT.reshape(points * batch, batch), targets, reduction="none")
    return (image_weights * image_loss.view(points, batch).mean(1)
            + (1.0 - image_weights) * text_loss.view(points, batch).mean(1))


class ContrastiveLoss(nn.Module):
    """`contrastive_loss` with its ``image_weight`` fixed at construction."""

    def __init__(self, image_weight: float = 0.75) -> None:
        super().__init__()
        _check_image_weight(image_weight)
        self.image_weight = image_weight

    def forward(self, image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor) -> LossOutput:
        """The weighted loss of one batch of pairs."""
        return contrastive_loss(image_embeds, text_embeds, logit_scale, self.image_weight)


def _check_image_weight(image_weight: float) -> None:
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight!r}.")
