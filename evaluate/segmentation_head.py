"""A light segmentation decoder on cached patch tokens, trained with Dice + BCE on binary masks.

The backbone stays frozen: its (B, T, D) patch tokens of a g x g grid are the only input, so a
segmentation run needs the token cache and never an image.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from adaptor_vlp.evaluate.early_stopping import (
    TrainingOutcome,
    TrainingSettings,
    predict_in_batches,
    seeded_torch,
    train_with_early_stopping,
)


@dataclass(frozen=True)
class DecoderSettings:
    """The decoder's width and how it is trained (optimiser, batch size, early stopping).

    `training.max_epochs` is not read: a run's epochs are `fit_segmentation_head`'s `epochs` argument.
    """

    hidden_channels: int = 128
    training: TrainingSettings = TrainingSettings(learning_rate=1e-3, weight_decay=0.01, batch_size=16, patience=5)


class TokenGridDecoder(nn.Module):
    """Patch tokens -> mask logits: a 1x1 conv to `hidden` channels, two x2 bilinear upsampling
    3x3 conv stages, a 1x1 conv to one channel, and a bilinear resize to `out_size`."""

    def __init__(self, n_features: int, grid: int, out_size: tuple[int, int], hidden: int) -> None:
        super().__init__()
        if hidden < 4:
            raise ValueError(f"hidden_channels must be at least 4 (it is halved twice), got {hidden}")
        self.grid = grid
        self.out_size = out_size
        self.reduce = _conv_block(n_features, hidden, kernel_size=1)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv_block(hidden, hidden // 2, kernel_size=3),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv_block(hidden // 2, hidden // 4, kernel_size=3),
        )
        self.classify = nn.Conv2d(hidden // 4, 1, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens of any float dtype -> (B, H, W) mask logits."""
        batch, _, n_features = tokens.shape
        grid_map = tokens.to(torch.float32).transpose(1, 2).reshape(batch, n_features, self.grid, self.grid)
        logits = self.classify(self.upsample(self.reduce(grid_map)))
        resized = functional.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=False)
        return resized[:, 0]


def dice_bce_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus the mean per-image soft Dice loss, smoothed by 1 so that an
    empty mask is learnt as "predict nothing" rather than being undefined."""
    targets = masks.to(torch.float32)
    bce = functional.binary_cross_entropy_with_logits(logits, targets)
    probabilities = torch.sigmoid(logits).flatten(1)
    targets = targets.flatten(1)
    overlap = (probabilities * targets).sum(dim=1)
    dice = (2 * overlap + 1) / (probabilities.sum(dim=1) + targets.sum(dim=1) + 1)
    return bce + (1 - dice).mean()


@dataclass(frozen=True)
class FittedSegmenter:
    """A trained decoder, the grid and mask size it works on, and which epoch's weights it kept."""

    decoder: TokenGridDecoder
    grid: int
    out_size: tuple[int, int]
    n_features: int
    training: TrainingOutcome
    batch_size: int

    def predict_probabilities(self, tokens: np.ndarray) -> np.ndarray:
        """(N, H, W) per-pixel foreground probabilities for (N, T, D) tokens."""
        inputs = torch.from_numpy(_checked_tokens(tokens, "tokens", self.grid, self.n_features))
        return torch.sigmoid(predict_in_batches(self.decoder, inputs, self.batch_size)).numpy()

    def predict_masks(self, tokens: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """(N, H, W) boolean masks: pixels whose probability is at least `threshold`."""
        return self.predict_probabilities(tokens) >= threshold


def fit_segmentation_head(
    train_tokens: np.ndarray,
    train_masks: np.ndarray,
    val_tokens: np.ndarray,
    val_masks: np.ndarray,
    grid: int,
    out_size: int | tuple[int, int],
    seed: int = 0,
    epochs: int = 50,
    settings: DecoderSettings = DecoderSettings(),
) -> FittedSegmenter:
    """Trains a `TokenGridDecoder` on (N, grid*grid, D) tokens and (N, H, W) binary masks, where
    (H, W) is `out_size`, keeping the weights with the lowest validation loss.

    Tokens may be float16 (as cached); they stay in that dtype in memory and are widened per
    batch. Seeded and repeatable on CPU.
    """
    out_size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    train_tokens = _checked_tokens(train_tokens, "train_tokens", grid)
    n_features = train_tokens.shape[2]
    val_tokens = _checked_tokens(val_tokens, "val_tokens", grid, n_features)
    train_masks = _checked_masks(train_masks, "train_masks", len(train_tokens), out_size)
    val_masks = _checked_masks(val_masks, "val_masks", len(val_tokens), out_size)
    training = replace(settings.training, max_epochs=epochs)
    with seeded_torch(seed):
        decoder = TokenGridDecoder(n_features, grid, out_size, settings.hidden_channels)
        outcome = train_with_early_stopping(
            decoder,
            dice_bce_loss,
            train=(torch.from_numpy(train_tokens), torch.from_numpy(train_masks)),
            val=(torch.from_numpy(val_tokens), torch.from_numpy(val_masks)),
            settings=training,
            seed=seed,
        )
    return FittedSegmenter(
        decoder=decoder,
        grid=grid,
        out_size=out_size,
        n_features=n_features,
        training=outcome,
        batch_size=training.batch_size,
    )


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


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
