"""A segmentation decoder on cached patch tokens, built and trained as a `SegmentationProtocol` says.

The backbone stays frozen: its (B, T, D) patch tokens of a g x g grid are the only input, so a
segmentation run needs the token cache and never an image. Training may cycle through K augmented
views of every training image (tokens and masks warped alike at extraction), one view per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adaptor_vlp.evaluate.early_stopping import predict_in_batches, seeded_torch
from adaptor_vlp.evaluate.segmentation_decoders import build_decoder
from adaptor_vlp.evaluate.segmentation_loss import loss_function
from adaptor_vlp.evaluate.segmentation_protocol import SegmentationProtocol
from adaptor_vlp.evaluate.segmentation_training import SegmentationTraining, train_segmenter

DEFAULT_PROTOCOL = SegmentationProtocol()
"""The protocol `fit_segmentation_head` follows unless told otherwise (the published SIIM one)."""


@dataclass(frozen=True)
class FittedSegmenter:
    """A trained decoder, the grid and mask size it works on, and which epoch's weights it kept."""

    decoder: nn.Module
    grid: int
    out_size: tuple[int, int]
    n_features: int
    training: SegmentationTraining
    batch_size: int

    def predict_probabilities(self, tokens: np.ndarray) -> np.ndarray:
        """(N, H, W) per-pixel foreground probabilities for (N, T, D) tokens."""
        inputs = torch.from_numpy(_checked_tokens(tokens, "tokens", self.grid, self.n_features))
        return torch.sigmoid(predict_in_batches(self.decoder, inputs, self.batch_size)).numpy()

    def predict_masks(self, tokens: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """(N, H, W) boolean masks: pixels whose probability is above `threshold` (the published get_dice's rule)."""
        return self.predict_probabilities(tokens) > threshold


def fit_segmentation_head(
    train_tokens: np.ndarray,
    train_masks: np.ndarray,
    val_tokens: np.ndarray,
    val_masks: np.ndarray,
    grid: int,
    out_size: int | tuple[int, int],
    seed: int = 0,
    protocol: SegmentationProtocol = DEFAULT_PROTOCOL,
) -> FittedSegmenter:
    """Trains the protocol's decoder on (N, grid*grid, D) tokens and (N, H, W) binary masks, (H, W) being
    `out_size`, keeping the weights of the best validated epoch.

    Augmented views come as (K, N, grid*grid, D) tokens with (K, N, H, W) masks: epoch e trains on view
    (e - 1) mod K. Tokens may be float16 (as cached); they stay so in memory and are widened per batch.
    Seeded and repeatable on CPU.
    """
    out_size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    if out_size[0] != out_size[1]:
        raise ValueError(f"masks must be square, got out_size {out_size}")
    view_tokens = train_tokens if np.ndim(train_tokens) == 4 else np.asarray(train_tokens)[None]
    view_masks = train_masks if np.ndim(train_masks) == 4 else np.asarray(train_masks)[None]
    if len(view_tokens) != len(view_masks):
        raise ValueError(f"got {len(view_tokens)} views of the training tokens but {len(view_masks)} of their masks")
    view_tokens = [_checked_tokens(tokens, "train_tokens", grid) for tokens in view_tokens]
    n_features = view_tokens[0].shape[2]
    view_tokens = [_checked_tokens(tokens, "train_tokens", grid, n_features) for tokens in view_tokens]
    n_train = len(view_tokens[0])
    view_masks = [_checked_masks(masks, "train_masks", n_train, out_size) for masks in view_masks]
    val_tokens = _checked_tokens(val_tokens, "val_tokens", grid, n_features)
    val_masks = _checked_masks(val_masks, "val_masks", len(val_tokens), out_size)
    with seeded_torch(seed):
        decoder = build_decoder(protocol.decoder, n_features, grid, out_size[0])
        training = train_segmenter(
            decoder,
            loss_function(protocol.loss),
            train_views=[torch.from_numpy(tokens) for tokens in view_tokens],
            train_masks=[torch.from_numpy(masks) for masks in view_masks],
            val=(torch.from_numpy(val_tokens), torch.from_numpy(val_masks)),
            protocol=protocol,
            seed=seed,
        )
    return FittedSegmenter(decoder=decoder, grid=grid, out_size=out_size, n_features=n_features,
                           training=training, batch_size=protocol.batch_size)


def _checked_tokens(tokens: np.ndarray, name: str, grid: int, n_features: int | None = None) -> np.ndarray:
    """The tokens as a float16 or float32 (N, grid*grid, D) array, after checking shape and values."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 3 or tokens.shape[1] != grid * grid:
        raise ValueError(
            f"{name} must be (N, {grid * grid}, D) patch tokens of a {grid}x{grid} grid, got shape "
            f"{tokens.shape}; drop class or register tokens before segmentation"
        )
    if n_features is not None and tokens.shape[2] != n_features:
        raise ValueError(f"{name} have {tokens.shape[2]} features, the decoder expects {n_features}")
    if tokens.dtype not in (np.float16, np.float32):
        tokens = tokens.astype(np.float32)
    if not np.isfinite(tokens.sum(axis=(1, 2), dtype=np.float64)).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return tokens


def _checked_masks(masks: np.ndarray, name: str, n_rows: int, out_size: tuple[int, int]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != (n_rows, *out_size):
        raise ValueError(f"{name} must be (N={n_rows}, {out_size[0]}, {out_size[1]}), got {masks.shape}")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1 binary masks")
    return masks.astype(bool)
