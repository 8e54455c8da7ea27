"""The paper's DINOv2 entries embed as torch.hub's dinov2_vits14 / vitb14 do: the position table interpolated at
every forward pass (bicubic, offset 0.1, no antialias), at 224 px and at the segmentation runs' 896 px.

The reference below is written from facebookresearch/dinov2 (vision_transformer.py `prepare_tokens_with_masks`
and `interpolate_pos_encoding`, hubconf's interpolate_offset=0.1 and interpolate_antialias=False) on a seeded
checkpoint whose position table is large enough that every token depends on where it is.
"""
import dataclasses
import math

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from adaptor_vlp.extract.backbone_spec import ImageStep, Interpolation, PositionEmbedding, StepOp
from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.encoders import load_image_encoder
from adaptor_vlp.extract.hub_positions import hub_position_table
from adaptor_vlp.extract.segmentation_input import segmentation_input

NATIVE = 518
ARCHITECTURES = {"dinov2-s": "vit_small_patch14_dinov2", "dinov2-b": "vit_base_patch14_dinov2"}


def hub_interpolate_pos_encoding(pos_embed, x, w, h, patch_size=14, interpolate_offset=0.1, antialias=False):
    """dinov2/models/vision_transformer.py DinoVisionTransformer.interpolate_pos_encoding, as a function."""
    previous_dtype = x.dtype
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    M = int(math.sqrt(N))
    sx = float(w0 + interpolate_offset) / M
    sy = float(h0 + interpolate_offset) / M
    patch_pos_embed = nn.functional.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
                                                mode="bicubic", antialias=antialias, scale_factor=(sx, sy))
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)


def hub_forward(model, pixels):
    """prepare_tokens_with_masks, the blocks and the final norm: (x_norm_clstoken, x_norm_patchtokens)."""
    B, nc, w, h = pixels.shape
    x = model.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    x = x + hub_interpolate_pos_encoding(model.pos_embed, x, w, h)
    for block in model.blocks:
        x = block(x)
    x = model.norm(x)
    return x[:, 0], x[:, 1:]


@pytest.fixture(scope="module", params=["dinov2-s", pytest.param("dinov2-b", marks=pytest.mark.slow)])
def seeded(request, tmp_path_factory):
    """(backbone name, seeded reference model at 518 px, checkpoint file) with a position table of std 1."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        reference = timm.create_model(ARCHITECTURES[request.param], pretrained=False, img_size=NATIVE,
                                      num_classes=0).eval()
        with torch.no_grad():
            reference.pos_embed.normal_()
    checkpoint = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in reference.state_dict().items()}, str(checkpoint))
    return request.param, reference, checkpoint


def spec_at(name, size):
    """The paper entry with its image steps ending at `size` (the geometry does not matter here), decoded in full
    (the entry's reduced decode size is for its own first resize, 256 px)."""
    spec = get_spec(name)
    steps = (ImageStep(StepOp.RESIZE, size, Interpolation.BILINEAR),)
    return dataclasses.replace(spec, image=dataclasses.replace(spec.image, steps=steps, decode_size=None))


@pytest.mark.parametrize("grid", [16, 64])
def test_the_table_equals_the_hub_formula_at_224_and_896_px(grid):
    table = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    tokens = torch.zeros(1, 1 + grid * grid, 8)
    expected = hub_interpolate_pos_encoding(table, tokens, 14 * grid, 14 * grid)
    torch.testing.assert_close(hub_position_table(table, grid, grid), expected, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 896])
def test_cls_and_patch_tokens_equal_the_hub_models(seeded, size):
    name, reference, checkpoint = seeded
    encoder = load_image_encoder(spec_at(name, size) if size != 224 else name, weights=checkpoint)
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    output = encoder.encode(pixels, with_tokens=True)
    with torch.inference_mode():
        cls, patches = hub_forward(reference, pixels)
    torch.testing.assert_close(output.pooled, cls, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.tokens, patches, rtol=1e-4, atol=1e-4)
    assert output.tokens.shape[1] == (size // 14) ** 2
    assert encoder.preprocessing["position_embedding"] == {"method": "hub-interpolated", "mode": "bicubic",
                                                           "interpolate_offset": 0.1, "antialias": False}


def test_the_hub_table_differs_from_timms_load_time_resampling(seeded):
    """What timm alone does at 224 px (resample once, antialiased, no offset) gives other embeddings."""
    _, reference, _ = seeded
    ours = hub_position_table(reference.pos_embed.detach(), 16, 16)
    timm_resampled = timm.layers.resample_abs_pos_embed(reference.pos_embed.detach(), (16, 16), num_prefix_tokens=1)
    assert ours.shape == timm_resampled.shape == (1, 257, reference.embed_dim)
    assert (ours - timm_resampled).abs().max() > 0.1
    unchanged = hub_position_table(reference.pos_embed.detach(), 37, 37)
    assert unchanged is reference.pos_embed.detach() or torch.equal(unchanged, reference.pos_embed.detach())


def test_the_paper_entries_ask_for_hub_interpolation_and_others_keep_the_librarys_own():
    assert get_spec("dinov2-s").position_embedding is PositionEmbedding.HUB_INTERPOLATED
    assert get_spec("dinov2-b").position_embedding is PositionEmbedding.HUB_INTERPOLATED
    assert get_spec("resnet18-random").position_embedding is PositionEmbedding.CHECKPOINT
    assert get_spec("timm:vit_tiny_patch16_224").position_embedding is PositionEmbedding.CHECKPOINT


def test_the_demo_vit_keeps_one_set_of_weights_at_every_input_size():
    """tiny-vit stands in for the DINOv2 entries in the demo: its table is interpolated at each forward, so its
    32 px segmentation stores carry the weights (and so serve the Adaptor) of its 64 px stores."""
    spec = get_spec("tiny-vit")
    assert spec.position_embedding is PositionEmbedding.HUB_INTERPOLATED
    encoders = [load_image_encoder(one, device="cpu") for one in (spec, segmentation_input(spec, 32))]
    assert encoders[0].weights_sha256 == encoders[1].weights_sha256
    assert (encoders[0].token_count, encoders[1].token_count) == (16, 4)
