"""The published ResNet-AE U-Net's decoder, reading a frozen CNN's cached intermediate maps.

holajoa/Adaptor-VL-SSL `models/seg_models.py` `ResNetAEUNet` (lines 37-168) runs the frozen
ResNet-AE encoder live and decodes from two inputs: the Adaptor's embedding of the pooled code,
seen as a (B, D, 1, 1) map that a "neck" of transposed convolutions grows to 1/32 of the input,
and the encoder's first four intermediate maps (its `block1`-`block4`: the stem after ReLU and
the first three residual stages, at 1/2, 1/4, 1/8 and 1/16 of the input) as skip connections.
Here the encoder does not run: the pooled embedding and the four maps come from a store
extracted with `--feature-maps`, so `UNetDecoder` is exactly that model's decode path
(`decode`, lines 136-159) with its initialisation (`_weights_init`, lines 114-125).

Published quirks kept: the neck's extra x2 stages for inputs of 448 and 896 px are one module
applied repeatedly (`[ConvTranspose2d(...)] * n` shares its weights, line 68); only `nn.Conv2d`
layers get Kaiming-normal weights (the transposed convolutions keep PyTorch's default), batch
norms start at weight 1 and bias 0. The published model accepts only inputs of 224 x 2^k px
(lines 60-73); for the demo's small inputs `neck_grid` is not 7 x 2^k, and the neck's output is
then bilinearly resized to it (`neck_resized` is True: a demo-only departure, recorded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional

from adaptor_vlp.evaluate.segmentation_decoders import initialise_as_published

NECK_CHANNELS = 512
"""seg_models.py:56-58: the neck's transposed convolutions output 512 channels."""
DECODER_CHANNELS = (512, 256, 128, 64, 32)
"""seg_models.py:75-84: up_conv6 .. up_conv10 output widths; conv6 .. conv9 keep the first four."""
SKIP_LEVELS = 4
"""block1 .. block4 of seg_models.py:49-52, read by conv9 .. conv6."""
PUBLISHED_NECK_GRID = 7
"""The published neck's output at 224 px: ConvTranspose2d(k3, s1) takes 1 -> 3, ConvTranspose2d(k3, s2) 3 -> 7."""
INPUT_PER_NECK_CELL = 32
"""The neck's grid is 1/32 of the input side: five x2 transposed convolutions bring it back to the input's size."""


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """seg_models.py:11-19: two conv3x3 / batch norm / ReLU stages."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def up_conv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """seg_models.py:22-23: a x2 transposed convolution."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


def width_divisor_problem(divisor: int) -> str | None:
    """Why the published U-Net's widths cannot be divided by `divisor`, or None when they can."""
    widths = (NECK_CHANNELS, *DECODER_CHANNELS)
    if divisor < 1 or any(width % divisor for width in widths):
        return f"must divide the published widths {widths}, got {divisor}"
    return None


@dataclass(frozen=True)
class UNetGeometry:
    """What the decoder reads: the pooled embedding's width, each skip map's channels, the input image's side."""

    embedding_dim: int
    skip_channels: tuple[int, int, int, int]
    input_size: int
    width_divisor: int = 1
    """The published widths (512 .. 32) divided by this; 1 is the published model, more only for the CPU demo."""

    def __post_init__(self) -> None:
        problem = width_divisor_problem(self.width_divisor)
        if problem:
            raise ValueError(f"width_divisor {problem}")
        if len(self.skip_channels) != SKIP_LEVELS:
            raise ValueError(f"the U-Net reads {SKIP_LEVELS} skip maps, got channels for {len(self.skip_channels)}")
        if self.input_size % INPUT_PER_NECK_CELL:
            raise ValueError(f"the U-Net needs an input side divisible by {INPUT_PER_NECK_CELL}, "
                             f"got {self.input_size}")

    @property
    def neck_grid(self) -> int:
        """The side of the neck's output: 1/32 of the input (7 at 224 px, 28 at 896 px)."""
        return self.input_size // INPUT_PER_NECK_CELL

    @property
    def neck_doublings(self) -> int:
        """The published neck's extra x2 stages (seg_models.py:67): log2(input / 224), none below 224 px."""
        return max(0, int(math.log2(self.neck_grid / PUBLISHED_NECK_GRID)))

    @property
    def neck_resized(self) -> bool:
        """True where the published neck cannot reach `neck_grid` (inputs other than 224 x 2^k px)."""
        return PUBLISHED_NECK_GRID * 2 ** self.neck_doublings != self.neck_grid

    def skip_sides(self) -> tuple[int, ...]:
        """The side of each skip map, block1 first: 1/2, 1/4, 1/8 and 1/16 of the input."""
        return tuple(self.input_size // 2 ** level for level in range(1, SKIP_LEVELS + 1))


class UNetDecoder(nn.Module):
    """(pooled (B, D), four skip maps) -> (B, S, S) mask logits, as seg_models.py ResNetAEUNet.decode."""

    def __init__(self, geometry: UNetGeometry) -> None:
        super().__init__()
        self.geometry = geometry
        neck, *decoder = (width // geometry.width_divisor for width in (NECK_CHANNELS, *DECODER_CHANNELS))
        self.neck = nn.Sequential(
            nn.ConvTranspose2d(geometry.embedding_dim, neck, kernel_size=3, stride=1, bias=False),
            nn.ConvTranspose2d(neck, neck, kernel_size=3, stride=2, bias=False),
        )
        self.neck_doubling = (nn.ConvTranspose2d(neck, neck, kernel_size=2, stride=2, bias=False)
                              if geometry.neck_doublings else None)
        widths = (neck, *decoder)
        skips = tuple(reversed(geometry.skip_channels))  # block4 meets the first up-sampled map
        self.up_convs = nn.ModuleList(up_conv(widths[i], widths[i + 1]) for i in range(len(DECODER_CHANNELS)))
        self.convs = nn.ModuleList(double_conv(widths[i + 1] + skips[i], widths[i + 1]) for i in range(SKIP_LEVELS))
        self.classify = nn.Conv2d(widths[-1], 1, kernel_size=1)
        initialise_as_published(self)

    def forward(self, pooled: torch.Tensor, skip_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, D) embeddings and the (B, C_l, S/2^l, S/2^l) maps for l = 1..4 (any float dtype) -> (B, S, S)."""
        x = self.neck(pooled.to(torch.float32)[:, :, None, None])
        for _ in range(self.geometry.neck_doublings):
            x = self.neck_doubling(x)
        if self.geometry.neck_resized:
            x = functional.interpolate(x, size=(self.geometry.neck_grid,) * 2, mode="bilinear", align_corners=False)
        for up, conv, skip in zip(self.up_convs, self.convs, reversed(tuple(skip_maps))):
            x = conv(torch.cat([up(x), skip.to(torch.float32)], dim=1))
        return self.classify(self.up_convs[-1](x))[:, 0]
