"""The decoders that turn a (B, T, D) grid of cached patch tokens into (B, H, W) mask logits.

`build_decoder(name, n_features, grid)` builds one by its `DecoderName`; `decoder_output_size`
says how large its mask is, so that masks are scored at the decoder's own resolution. A new
decoder (the published U-Net over a CNN's intermediate maps) is one more name and one more branch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from adaptor_vlp.evaluate.segmentation_protocol import DecoderName

PUBLISHED_FEATURES = (512, 256, 128, 64)
"""models/seg_models.py:180 (ViTDecoder's features) and segment.py:102."""
PUBLISHED_NATIVE_GRID = 16
"""The grid of a 224 px image in 14 px patches, where ViTDecoder's first conv has no padding (seg_models.py:183-188)."""
PATCH_PIXELS = 14
LIGHT_HIDDEN_CHANNELS = 128


def initialise_as_published(model: nn.Module) -> None:
    """The published decoders' initialisation (seg_models.py ViTDecoder._weights_init 279-285, and the U-Net's
    114-125): every convolution Kaiming-normal (fan out, ReLU), every batch norm weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)


class PublishedViTDecoder(nn.Module):
    """models/seg_models.py ViTDecoder (178-235) on a g x g token grid, with the published initialisation.

    Stage 0 is a 3x3 conv/BN/ReLU keeping the width: unpadded at g = 16 (16 -> 14), else padded and
    followed by a nearest resize by 14/16 (64 -> 56). Four conv3x3/BN/ReLU/x2-nearest-upsample stages
    follow (512, 256, 128, 64 channels), then a 3x3 conv to one channel: 16 pixels per stage-0 cell,
    so 224 px at g = 16 and 896 px at g = 64, the input image's size. Convolutions start from
    Kaiming-normal (fan out, ReLU) weights, batch norms from weight 1 and bias 0 (seg_models.py:279-285).
    """

    def __init__(self, n_features: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        if grid == PUBLISHED_NATIVE_GRID:
            self.decoder_0 = _stage(n_features, n_features, padding=0)
        else:
            self.decoder_0 = _stage(n_features, n_features, padding=1,
                                    upsample=nn.Upsample(scale_factor=PATCH_PIXELS / PUBLISHED_NATIVE_GRID))
        widths = (n_features, *PUBLISHED_FEATURES)
        for index, (inputs, outputs) in enumerate(zip(widths, widths[1:]), start=1):
            setattr(self, f"decoder_{index}", _stage(inputs, outputs, padding=1, upsample=nn.Upsample(scale_factor=2)))
        self.final_out = nn.Conv2d(PUBLISHED_FEATURES[-1], 1, 3, padding=1)
        initialise_as_published(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens of any float dtype -> (B, H, W) mask logits."""
        features = _token_map(tokens, self.grid)
        for index in range(len(PUBLISHED_FEATURES) + 1):
            features = getattr(self, f"decoder_{index}")(features)
        return self.final_out(features)[:, 0]


class LightDecoder(nn.Module):
    """Patch tokens -> mask logits: a 1x1 conv to 128 channels, two x2 bilinear upsampling 3x3 conv
    stages, a 1x1 conv to one channel: four pixels per token."""

    def __init__(self, n_features: int, grid: int, hidden: int = LIGHT_HIDDEN_CHANNELS) -> None:
        super().__init__()
        self.grid = grid
        self.reduce = _conv_block(n_features, hidden, kernel_size=1)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv_block(hidden, hidden // 2, kernel_size=3),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv_block(hidden // 2, hidden // 4, kernel_size=3),
        )
        self.classify = nn.Conv2d(hidden // 4, 1, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens of any float dtype -> (B, 4g, 4g) mask logits."""
        return self.classify(self.upsample(self.reduce(_token_map(tokens, self.grid))))[:, 0]


def decoder_output_size(name: DecoderName, grid: int) -> int:
    """The side of the mask the decoder predicts from a g x g grid."""
    if name is DecoderName.LIGHT:
        return 4 * grid
    stage_0 = grid - 2 if grid == PUBLISHED_NATIVE_GRID else int(grid * PATCH_PIXELS / PUBLISHED_NATIVE_GRID)
    return stage_0 * 2 ** len(PUBLISHED_FEATURES)


def build_decoder(name: DecoderName, n_features: int, grid: int, out_size: int | None = None) -> nn.Module:
    """The decoder called `name` for (B, grid*grid, n_features) tokens, its logits bilinearly resized to
    `out_size` when that is given and differs from its own (`decoder_output_size`).

    ValueError when the decoder cannot read so small a grid."""
    native = decoder_output_size(name, grid)
    if native < 1:
        raise ValueError(f"the {name.value} decoder cannot read a {grid} x {grid} token grid; use the "
                         f"{DecoderName.LIGHT.value} decoder")
    decoder = LightDecoder(n_features, grid) if name is DecoderName.LIGHT else PublishedViTDecoder(n_features, grid)
    return decoder if out_size in (None, native) else ResizedDecoder(decoder, out_size)


class ResizedDecoder(nn.Module):
    """A decoder whose (B, H, W) logits are bilinearly resized to `size` x `size`."""

    def __init__(self, decoder: nn.Module, size: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.size = size

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(tokens)
        return functional.interpolate(logits[:, None], size=(self.size, self.size), mode="bilinear",
                                      align_corners=False)[:, 0]


def _token_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, g*g, D) row-major tokens -> a float32 (B, D, g, g) map (seg_models.py:291-293)."""
    batch, _, n_features = tokens.shape
    return tokens.to(torch.float32).transpose(1, 2).reshape(batch, n_features, grid, grid)


def _stage(inputs: int, outputs: int, padding: int, upsample: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Conv2d(inputs, outputs, 3, padding=padding), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([upsample] if upsample is not None else []))


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )
