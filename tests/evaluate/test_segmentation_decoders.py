"""The published decoder has the published layers and computes what the published ViTDecoder computes."""
import pytest
import torch
from torch import nn

from adaptor_vlp.evaluate.segmentation_decoders import build_decoder, decoder_output_size
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName


class PublishedViTDecoder(nn.Module):
    """models/seg_models.py ViTDecoder (holajoa/Adaptor-VL-SSL), copied with out_channels=1."""

    def __init__(self, in_channels, out_channels=1, features=(512, 256, 128, 64), input_size=224):
        super().__init__()
        if input_size == 224:
            self.decoder_0 = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=0),
                                           nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        else:
            self.decoder_0 = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, stride=1, padding=1),
                                           nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                           nn.Upsample(scale_factor=14 / 16))
        self.decoder_1 = nn.Sequential(nn.Conv2d(in_channels, features[0], 3, padding=1), nn.BatchNorm2d(features[0]),
                                       nn.ReLU(inplace=True), nn.Upsample(scale_factor=2))
        self.decoder_2 = nn.Sequential(nn.Conv2d(features[0], features[1], 3, padding=1), nn.BatchNorm2d(features[1]),
                                       nn.ReLU(inplace=True), nn.Upsample(scale_factor=2))
        self.decoder_3 = nn.Sequential(nn.Conv2d(features[1], features[2], 3, padding=1), nn.BatchNorm2d(features[2]),
                                       nn.ReLU(inplace=True), nn.Upsample(scale_factor=2))
        self.decoder_4 = nn.Sequential(nn.Conv2d(features[2], features[3], 3, padding=1), nn.BatchNorm2d(features[3]),
                                       nn.ReLU(inplace=True), nn.Upsample(scale_factor=2))
        self.final_out = nn.Conv2d(features[-1], out_channels, 3, padding=1)

    def forward(self, x):
        for stage in (self.decoder_0, self.decoder_1, self.decoder_2, self.decoder_3, self.decoder_4):
            x = stage(x)
        return self.final_out(x)


def published_input(tokens, grid, hidden_dim):
    """DINOv2Segmenter.forward (seg_models.py:287-294): tokens reshaped to (B, g, g, D), then (B, D, g, g)."""
    return tokens.reshape(len(tokens), grid, grid, hidden_dim).permute(0, 3, 1, 2)


def shapes(module):
    return [(name, tuple(parameter.shape)) for name, parameter in module.named_parameters()]


@pytest.mark.parametrize(("grid", "input_size"), [(16, 224), pytest.param(32, 896, marks=pytest.mark.slow)])
def test_layers_and_outputs_match_the_published_decoder(grid, input_size):
    """At 224 px (16 x 16 tokens) and in the 896 px branch (run on a 32 x 32 grid to keep the test fast)."""
    hidden = 24
    ours = build_decoder(DecoderName.PUBLISHED_VIT, hidden, grid)
    theirs = PublishedViTDecoder(hidden, input_size=input_size)
    assert shapes(ours) == shapes(theirs)
    assert [type(m).__name__ for m in ours.modules()][1:] == [type(m).__name__ for m in theirs.modules()][1:]
    theirs.load_state_dict(ours.state_dict())
    tokens = torch.randn(2, grid * grid, hidden, generator=torch.Generator().manual_seed(0))
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        expected = theirs(published_input(tokens, grid, hidden))[:, 0]
        torch.testing.assert_close(ours(tokens), expected)
    assert expected.shape[-1] == decoder_output_size(DecoderName.PUBLISHED_VIT, grid) == 14 * grid


def test_the_published_grids_give_masks_at_the_published_crop_sizes():
    assert decoder_output_size(DecoderName.PUBLISHED_VIT, 16) == 224
    assert decoder_output_size(DecoderName.PUBLISHED_VIT, 64) == 896


def test_published_initialisation_kaiming_fan_out_and_unit_batch_norms():
    decoder = build_decoder(DecoderName.PUBLISHED_VIT, 32, 16)
    convs = [m for m in decoder.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any() for norm in norms)
    widest = convs[2]  # 512 -> 256 channels, fan out 256 * 9: std sqrt(2 / fan_out)
    expected_std = (2 / (widest.out_channels * 9)) ** 0.5
    assert abs(float(widest.weight.detach().std()) - expected_std) / expected_std < 0.05


def test_an_output_size_other_than_the_decoders_own_is_a_bilinear_resize():
    decoder = build_decoder(DecoderName.LIGHT, 8, 4, out_size=24)
    assert decoder(torch.randn(3, 16, 8)).shape == (3, 24, 24)
    assert decoder_output_size(DecoderName.LIGHT, 4) == 16


def test_a_grid_too_small_for_the_published_decoder_is_refused_naming_the_light_one():
    with pytest.raises(ValueError, match="light"):
        build_decoder(DecoderName.PUBLISHED_VIT, 8, 1)
