"""DINOv2's position embeddings as torch.hub's facebookresearch/dinov2 models compute them, for timm ViTs.

The hub model keeps its checkpoint's M x M position table (37 x 37 for 518 px) and, at every
forward pass on a g x g patch grid other than M x M, interpolates it bicubically with scale factors
(g + 0.1) / M and no antialiasing (dinov2/models/vision_transformer.py `interpolate_pos_encoding`;
hubconf: interpolate_offset=0.1, interpolate_antialias=False). timm instead resamples the table once
when a checkpoint loads at another image size, to exactly g x g and antialiased: other embeddings.
`use_hub_positions` makes a timm DINOv2 built at its native size compute them the hub's way.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional

HUB_INTERPOLATE_OFFSET = 0.1
"""dinov2 hubconf (_make_dinov2_model): interpolate_offset=0.1."""
HUB_INTERPOLATE_ANTIALIAS = False
"""dinov2 hubconf (_make_dinov2_model): interpolate_antialias=False."""


def hub_position_table(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (1, 1 + height*width, D) position embeddings for a height x width patch grid from the checkpoint's
    (1, 1 + M*M, D) table (class position first), as interpolate_pos_encoding computes them."""
    patches = table.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"a position table of {patches} patch entries is not a square grid")
    if (height, width) == (side, side):
        return table
    grid = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = ((height + HUB_INTERPOLATE_OFFSET) / side, (width + HUB_INTERPOLATE_OFFSET) / side)
    resized = functional.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=HUB_INTERPOLATE_ANTIALIAS)
    if tuple(resized.shape[-2:]) != (height, width):
        raise ValueError(f"interpolating a {side} x {side} table gave {tuple(resized.shape[-2:])}, "
                         f"not the {height} x {width} grid")
    patch_table = resized.permute(0, 2, 3, 1).reshape(1, height * width, -1)
    return torch.cat([table[:, :1].float(), patch_table], dim=1).to(table.dtype)


def use_hub_positions(model: torch.nn.Module) -> torch.nn.Module:
    """Makes a timm VisionTransformer built with dynamic_img_size (patch tokens as (B, H, W, C)) add the hub's
    interpolated position embeddings in its `_pos_embed`; returns the model."""
    if getattr(model, "reg_token", None) is not None or getattr(model, "no_embed_class", False) or \
            not getattr(model, "dynamic_img_size", False) or model.cls_token is None:
        raise ValueError("hub position interpolation needs a timm ViT with a class token, no registers, the class "
                         "position in its table, and dynamic_img_size=True")

    def hub_pos_embed(patches: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = patches.shape
        tokens = torch.cat([model.cls_token.expand(batch, -1, -1), patches.reshape(batch, -1, channels)], dim=1)
        return model.pos_drop(tokens + hub_position_table(model.pos_embed, height, width).to(tokens.dtype))

    model._pos_embed = hub_pos_embed
    return model
