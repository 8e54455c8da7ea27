"""The U-Net decoder against the published ResNetAEUNet's decode path, transcribed here independently."""
from __future__ import annotations

from math import log2

import pytest
import torch
import torch.nn as nn

from adaptor_vlp.evaluate.unet_decoder import UNetDecoder, UNetGeometry

PAPER_SKIPS = (64, 256, 512, 1024)
"""ResNet-AE-101's block1..block4 channels (seg_models.py:75-84 concatenates 1024, 512, 256, 64)."""


def _published_double_conv(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _published_up_conv(in_channels, out_channels):
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


class PublishedDecodePath(nn.Module):
    """holajoa/Adaptor-VL-SSL models/seg_models.py ResNetAEUNet, lines 37-159, less the encoder and adaptor."""

    def __init__(self, out_channels=1, input_size=224):
        super().__init__()
        if input_size == 224:
            self.neck = nn.Sequential(
                nn.ConvTranspose2d(768, 512, kernel_size=3, stride=1, bias=False),
                nn.ConvTranspose2d(512, 512, kernel_size=3, stride=2, bias=False),
            )
        elif input_size % 224 == 0 and (log2(input_size // 224)).is_integer():
            self.neck = nn.Sequential(
                nn.ConvTranspose2d(768, 512, kernel_size=3, stride=1, bias=False),
                nn.ConvTranspose2d(512, 512, kernel_size=3, stride=2, bias=False),
                *[nn.ConvTranspose2d(512, 512, kernel_size=2, stride=2, bias=False)] * int(log2(input_size // 224)),
            )
        self.up_conv6 = _published_up_conv(512, 512)
        self.conv6 = _published_double_conv(512 + 1024, 512)
        self.up_conv7 = _published_up_conv(512, 256)
        self.conv7 = _published_double_conv(256 + 512, 256)
        self.up_conv8 = _published_up_conv(256, 128)
        self.conv8 = _published_double_conv(128 + 256, 128)
        self.up_conv9 = _published_up_conv(128, 64)
        self.conv9 = _published_double_conv(64 + 64, 64)
        self.up_conv10 = _published_up_conv(64, 32)
        self.conv10 = nn.Conv2d(32, out_channels, kernel_size=1)

    def decode(self, x, features):
        block1, block2, block3, block4 = features
        neck = self.neck(x)
        x = self.up_conv6(neck)
        x = torch.cat([x, block4], dim=1)
        x = self.conv6(x)
        x = self.up_conv7(x)
        x = torch.cat([x, block3], dim=1)
        x = self.conv7(x)
        x = self.up_conv8(x)
        x = torch.cat([x, block2], dim=1)
        x = self.conv8(x)
        x = self.up_conv9(x)
        x = torch.cat([x, block1], dim=1)
        x = self.conv9(x)
        x = self.up_conv10(x)
        return self.conv10(x)


def _ours_in_published_order(decoder: UNetDecoder) -> list[nn.Module]:
    """Our layers in the order the published module registers its own."""
    modules = [*decoder.neck]
    if decoder.geometry.neck_doublings:
        modules.append(decoder.neck_doubling)
    for index in range(4):
        modules += [decoder.up_convs[index], decoder.convs[index]]
    return modules + [decoder.up_convs[4], decoder.classify]


def _published_order(published: PublishedDecodePath) -> list[nn.Module]:
    unique_neck = list(dict.fromkeys(published.neck))  # the repeated x2 stage is one module
    return [*unique_neck, published.up_conv6, published.conv6, published.up_conv7, published.conv7, published.up_conv8,
            published.conv8, published.up_conv9, published.conv9, published.up_conv10, published.conv10]


@pytest.mark.parametrize("input_size", [224, 448, 896])
def test_every_layer_has_the_published_shape(input_size: int) -> None:
    ours = UNetDecoder(UNetGeometry(768, PAPER_SKIPS, input_size))
    published = PublishedDecodePath(input_size=input_size)
    ours_layers, published_layers = _ours_in_published_order(ours), _published_order(published)
    assert len(ours_layers) == len(published_layers)
    for mine, theirs in zip(ours_layers, published_layers):
        assert type(mine) is type(theirs)
        assert [p.shape for p in mine.parameters()] == [p.shape for p in theirs.parameters()]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in published.parameters())


@pytest.mark.slow
def test_the_neck_reaches_the_published_grid_at_896_with_one_shared_doubling() -> None:
    ours = UNetDecoder(UNetGeometry(768, PAPER_SKIPS, 896))
    published = PublishedDecodePath(input_size=896)
    assert published.neck[2] is published.neck[3] and ours.geometry.neck_doublings == 2
    _copy_weights(ours, published)
    pooled = torch.randn(2, 768)
    with torch.no_grad():
        neck = published.neck(pooled[:, :, None, None])
        mine = ours.neck_doubling(ours.neck_doubling(ours.neck(pooled[:, :, None, None])))
    assert neck.shape == (2, 512, 28, 28)
    torch.testing.assert_close(mine, neck)


@pytest.mark.slow
def test_the_output_equals_the_published_decode_at_224() -> None:
    torch.manual_seed(0)
    ours = UNetDecoder(UNetGeometry(768, PAPER_SKIPS, 224)).eval()
    published = PublishedDecodePath(input_size=224).eval()
    _copy_weights(ours, published)
    pooled = torch.randn(1, 768)
    maps = [torch.randn(1, channels, 224 // 2 ** level, 224 // 2 ** level)
            for level, channels in enumerate(PAPER_SKIPS, start=1)]
    with torch.no_grad():
        expected = published.decode(pooled[:, :, None, None], maps)
        got = ours(pooled.half(), [m.half().float() for m in maps])
        exact = ours(pooled, maps)
    assert got.shape == (1, 224, 224)
    torch.testing.assert_close(exact, expected[:, 0])


def test_initialisation_follows_the_published_weights_init() -> None:
    torch.manual_seed(1)
    ours = UNetDecoder(UNetGeometry(768, PAPER_SKIPS, 224))
    batch_norms = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in batch_norms)
    conv = ours.convs[0][0]  # Kaiming normal, fan out: std sqrt(2 / (out * 3 * 3))
    assert abs(float(conv.weight.detach().std()) - (2 / (512 * 9)) ** 0.5) < 0.002
    up = ours.up_convs[0]  # a transposed conv keeps PyTorch's default (uniform within 1/sqrt(fan_in))
    assert float(up.weight.detach().abs().max()) <= 1 / (512 * 4) ** 0.5 + 1e-6


def test_small_demo_inputs_resize_the_neck_and_say_so() -> None:
    geometry = UNetGeometry(96, (32, 32, 48, 192), 64)
    assert geometry.neck_grid == 2 and geometry.neck_resized and geometry.skip_sides() == (32, 16, 8, 4)
    decoder = UNetDecoder(geometry)
    maps = [torch.randn(3, c, s, s) for c, s in zip(geometry.skip_channels, geometry.skip_sides())]
    assert decoder(torch.randn(3, 96), maps).shape == (3, 64, 64)
    assert not UNetGeometry(768, PAPER_SKIPS, 896).neck_resized


def test_the_demo_divides_every_width_and_keeps_the_structure() -> None:
    published = UNetDecoder(UNetGeometry(96, (32, 32, 48, 192), 64))
    narrow = UNetDecoder(UNetGeometry(96, (32, 32, 48, 192), 64, width_divisor=8))
    assert [type(m) for m in narrow.modules()] == [type(m) for m in published.modules()]
    assert narrow.convs[0][0].out_channels == 64 and narrow.classify.in_channels == 4
    maps = [torch.randn(2, c, s, s) for c, s in zip((32, 32, 48, 192), (32, 16, 8, 4))]
    assert narrow(torch.randn(2, 96), maps).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="width_divisor"):
        UNetGeometry(96, (32, 32, 48, 192), 64, width_divisor=3)


def test_bad_geometry_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        UNetGeometry(768, PAPER_SKIPS, 100)
    with pytest.raises(ValueError, match="4 skip maps"):
        UNetGeometry(768, (64, 256), 224)


def _copy_weights(ours: UNetDecoder, published: PublishedDecodePath) -> None:
    with torch.no_grad():
        for mine, theirs in zip(_ours_in_published_order(ours), _published_order(published)):
            for target, source in zip(theirs.state_dict().values(), mine.state_dict().values()):
                target.copy_(source)
