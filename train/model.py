"""The Adaptor of Qin et al., "Freeze the backbones" (ICASSP 2024, arXiv 2401.01179).

The Adaptor sits on top of two frozen backbones and is the only thing trained. Each modality is
projected to P dims by a bias-free linear map and L2-normalised; then L post-LN transformer blocks
run, each block applied twice per layer with the same weights; the outputs are L2-normalised.

The paper states one layer as ``image <- block(keys/values=image, query=text)`` followed by
``text <- block(keys/values=text, query=updated image)``. In the published layer the residual
stream is the keys/values side, i.e. the modality being updated: ``src = src + attn(query, src,
src)``. `CrossAttentionBlock` does the same. (The other reading, residual on the query side,
would write the text into the "image" stream, so each image embedding would carry its own paired
text and the loss could be driven to zero without relating images to texts at all.)

Observation the design builds on: in POOLED mode each sample is a sequence of length 1, so the
attention has a single key, its softmax is exactly 1 and the output is ``W_o (W_v x + b_v) + b_o``
whatever the query. The "cross-attention" is then a linear map of the updated modality's own
vector, each embedding depends on its own sample and modality only, and the two modalities meet
only in the loss. That is what makes the contrastive loss a valid objective: an embedding that
saw its paired sample could match it without learning anything.

TOKENS mode keeps that property. Patch and word sequences differ in length, so the paper's
wiring has no position-for-position residual, and any generalisation that lets the paired text
steer the image stream, even through attention weights alone, again lets the pair leak into both
embeddings and gives the loss the same shortcut. In TOKENS mode each modality therefore attends
over its own real tokens (the block in self-attention mode, the published code's image-only
mode), and the final stream is pooled by a masked mean over real tokens. A masked mean, not the
first token, because not every backbone has a summary token in position 0 (the chest-X-ray
autoencoder's feature map has none), and padded tokens must not count.

The image-only path (`Adaptor.encode_image`) computes exactly the image embedding of `forward`
in both modes, for each sample independently of its batch-mates. Its dense counterpart
(`Adaptor.encode_image_tokens`), for segmentation as the paper does it, runs an image's patch
tokens through the same projection and blocks and keeps one output per token instead of pooling. The published code
handed nn.MultiheadAttention (B, D) batches, which it reads as one unbatched sequence of length B, in
pre-training and downstream alike, so each embedding depended on the rest of its batch; here a
pooled batch is always B sequences of length 1.
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AdaptorInputs(str, enum.Enum):
    """What the backbones hand the Adaptor: one pooled vector, or a sequence of tokens, per sample."""

    POOLED = "pooled"
    TOKENS = "tokens"


@dataclass(frozen=True)
class AdaptorConfig:
    """Shape of the Adaptor; the defaults are the paper's (P=768, L=2, 12 heads, FFN 2048).

    The activation (ReLU) and the normalisation placement (post-LN) are the paper's and fixed.
    ``logit_scale_init`` is ln(1/0.07), CLIP's initial temperature; ``logit_scale_max`` is ln(100),
    CLIP's cap on the learned scale.
    """

    image_dim: int
    text_dim: int
    projection_dim: int = 768
    num_layers: int = 2
    num_heads: int = 12
    ffn_dim: int = 2048
    dropout: float = 0.1
    inputs: AdaptorInputs = AdaptorInputs.POOLED
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)

    def __post_init__(self) -> None:
        for name in ("image_dim", "text_dim", "projection_dim", "num_layers", "num_heads", "ffn_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AdaptorConfig.{name} must be a positive integer, got {value!r}.")
        if self.projection_dim % self.num_heads:
            raise ValueError(
                f"AdaptorConfig.projection_dim ({self.projection_dim}) must be divisible by "
                f"num_heads ({self.num_heads}); pick a head count that divides it."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AdaptorConfig.dropout must be in [0, 1), got {self.dropout!r}.")
        if not isinstance(self.inputs, AdaptorInputs):
            raise ValueError(
                f"AdaptorConfig.inputs must be an AdaptorInputs, got {self.inputs!r}; "
                f"use one of {[kind.value for kind in AdaptorInputs]}."
            )
        if not 0.0 <= self.logit_scale_init <= self.logit_scale_max:
            raise ValueError(
                f"AdaptorConfig needs 0 <= logit_scale_init <= logit_scale_max, got "
                f"{self.logit_scale_init!r} and {self.logit_scale_max!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, stored next to checkpoints."""
        as_dict = asdict(self)
        as_dict["inputs"] = self.inputs.value
        return as_dict

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AdaptorConfig:
        """The config a checkpoint's `to_dict` recorded; unknown keys are an error, not ignored."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"AdaptorConfig.from_dict: unknown key(s) {unknown}; expected a subset of {sorted(known)}."
            )
        missing = sorted(name for name in ("image_dim", "text_dim") if name not in values)
        if missing:
            raise ValueError(f"AdaptorConfig.from_dict: missing required key(s) {missing}.")
        parsed = dict(values)
        if "inputs" in parsed:
            try:
                parsed["inputs"] = AdaptorInputs(parsed["inputs"])
            except ValueError:
                raise ValueError(
                    f"AdaptorConfig.from_dict: inputs={parsed['inputs']!r} is not one of "
                    f"{[kind.value for kind in AdaptorInputs]}."
                ) from None
        return cls(**parsed)


@dataclass(frozen=True)
class AdaptorOutput:
    """Unit-norm embeddings, one row per sample, and the clamped log of the logit scale."""

    image_embeds: Tensor
    text_embeds: Tensor
    logit_scale: Tensor


class CrossAttentionBlock(nn.Module):
    """One Adaptor transformer block: the published layer, post-LN, ReLU FFN, dropout.

    ``stream`` is the residual stream and supplies the keys and values; ``queries`` come from the
    other modality (the paper's cross-attention) or, when omitted, from ``stream`` itself
    (self-attention, the published image-only mode)::

        h   = LayerNorm(stream + Dropout(MultiheadAttention(query=queries, key=stream, value=stream)))
        out = LayerNorm(h + Dropout(Linear(Dropout(ReLU(Linear(h))))))

    The attention output at query position t is added to stream position t, so ``queries`` must
    have the stream's length; with one pooled vector per sample both have length 1.
    """

    def __init__(self, width: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, width),
        )
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(width)

    def forward(self, stream: Tensor, queries: Tensor | None = None, stream_mask: Tensor | None = None) -> Tensor:
        """Update ``stream`` (B, T, P); ``stream_mask`` (B, T) is True for real tokens, which alone are keys."""
        queries = stream if queries is None else queries
        if queries.shape != stream.shape:
            raise ValueError(
                f"CrossAttentionBlock: queries {tuple(queries.shape)} must have the stream's shape "
                f"{tuple(stream.shape)}: the attention output at each query position is added to the "
                "same position of the stream."
            )
        if self.training and stream.shape[1] == 1:
            attended = self._single_key_attention(stream)
        else:
            key_padding_mask = None if stream_mask is None else ~stream_mask
            attended, _ = self.attention(queries, stream, stream, key_padding_mask=key_padding_mask,
                                         need_weights=False)
        hidden = self.attention_norm(stream + self.attention_dropout(attended))
        return self.ffn_norm(hidden + self.ffn_dropout(self.ffn(hidden)))

    def _single_key_attention(self, stream: Tensor) -> Tensor:
        """The attention of a length-1 stream in training, computed as its math reduces: no query or key projection.

        Over a single key the softmax is exactly 1, so each head's output is its dropped-out weight
        (0 or 1 / (1 - p)) times its value, and the result is ``out_proj`` of that. This is what
        nn.MultiheadAttention's math path computes, value for value, with the same dropout draws
        (one mask over the (batch, heads) attention weights), but the query and key projections get
        an exact zero gradient: the fused kernel it takes without dropout left them rounding noise,
        which AdamW turned into updates of weights that never change an output. `train.stacked_model`
        computes the same for many Adaptors at once.
        """
        attention = self.attention
        batch, _, width = stream.shape
        heads = attention.num_heads
        value = F.linear(stream, attention.in_proj_weight[2 * width:], attention.in_proj_bias[2 * width:])
        weights = F.dropout(stream.new_ones(batch, 1, heads, 1), attention.dropout, training=True)
        value = (value.view(batch, 1, heads, width // heads) * weights).view(batch, 1, width)
        return attention.out_proj(value)


class Adaptor(nn.Module):
    """Projections, shared transformer blocks and the learnable logit scale of the paper's Adaptor.

    Inputs are frozen-backbone features: in POOLED mode (B, image_dim) and (B, text_dim); in TOKENS
    mode (B, Ti, image_dim) and (B, Tt, text_dim) with boolean masks (B, Ti), (B, Tt), True for
    real tokens (omitted: every token is real). Features of any float dtype are cast to the
    Adaptor's. The logit scale is stored as its log, initialised to ln(1/0.07), and clamped to
    [0, ln 100] wherever it is used (the clamp, unlike CLIP's in-place one, passes no gradient
    while the stored value is outside the range).
    """

    def __init__(self, config: AdaptorConfig) -> None:
        super().__init__()
        self.config = config
        self.image_projection = nn.Linear(config.image_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_dim, config.projection_dim, bias=False)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(config.projection_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init))

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        image_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> AdaptorOutput:
        """Embed paired images and texts for the contrastive loss.

        POOLED mode runs the paper's wiring literally: per layer, image <- block(image, queries=text),
        then text <- block(text, queries=updated image). TOKENS mode runs each modality over its own
        tokens (see the module docstring for why). In both modes the result equals
        `encode_image` and `encode_text`.
        """
        if image.shape[0] != text.shape[0]:
            raise ValueError(
                f"Adaptor.forward: {image.shape[0]} images but {text.shape[0]} texts; pairs must align row by row."
            )
        if self.config.inputs is AdaptorInputs.TOKENS:
            image_embeds = self.encode_image(image, image_mask)
            text_embeds = self.encode_text(text, text_mask)
        else:
            image_stream, _ = self._project(self.image_projection, image, image_mask, "image")
            text_stream, _ = self._project(self.text_projection, text, text_mask, "text")
            for block in self.blocks:
                image_stream = block(image_stream, queries=text_stream)
                text_stream = block(text_stream, queries=image_stream)
            image_embeds = _pool_and_normalise(image_stream, None)
            text_embeds = _pool_and_normalise(text_stream, None)
        return AdaptorOutput(image_embeds, text_embeds, self.clamped_logit_scale())

    def encode_image(self, image: Tensor, image_mask: Tensor | None = None) -> Tensor:
        """Unit-norm image embeddings (B, P) without text: the downstream (classification, retrieval) path.

        Each sample is its own sequence (length 1 in POOLED mode, its own patch tokens in TOKENS
        mode) run through the projection and the blocks in self-attention mode, so its embedding
        does not depend on the rest of the batch.
        """
        return self._encode(self.image_projection, image, image_mask, "image")

    def encode_text(self, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        """Unit-norm text embeddings (B, P) without images; the text counterpart of `encode_image`."""
        return self._encode(self.text_projection, text, text_mask, "text")

    def encode_image_tokens(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Unit-norm per-token image embeddings (B, T, P) for dense tasks such as segmentation.

        Each image's patch tokens (B, T, image_dim) go through the image projection, then the
        blocks in self-attention mode over that image's own real tokens (`mask` (B, T), True for
        real tokens; omitted: all real), and every output token is L2-normalised; padded
        positions come out as zeros. This works whichever inputs the Adaptor was trained on: a
        POOLED Adaptor applies its projection to each patch token, as the paper's segmentation
        does. No token attends to another image of the batch, so a token's embedding does not
        depend on its batch-mates.
        """
        stream, mask = self._project_tokens(self.image_projection, tokens, mask, "image")
        stream = F.normalize(self._attend_within(stream, mask), dim=-1)
        return stream.masked_fill(~mask.unsqueeze(-1), 0.0)

    def clamped_logit_scale(self) -> Tensor:
        """The log of the logit scale, clamped to [0, logit_scale_max]."""
        return self.logit_scale.clamp(0.0, self.config.logit_scale_max)

    def _encode(self, projection: nn.Linear, features: Tensor, mask: Tensor | None, modality: str) -> Tensor:
        stream, mask = self._project(projection, features, mask, modality)
        return _pool_and_normalise(self._attend_within(stream, mask), mask)

    def _attend_within(self, stream: Tensor, mask: Tensor | None) -> Tensor:
        """The blocks in self-attention mode over each sample's own (real) positions."""
        for block in self.blocks:
            stream = block(stream, stream_mask=mask)
        return stream

    def _project(
        self, projection: nn.Linear, features: Tensor, mask: Tensor | None, modality: str
    ) -> tuple[Tensor, Tensor | None]:
        """Features as a unit-norm (B, T, P) stream, padded tokens zeroed, and the checked mask."""
        expected_dim = projection.in_features
        if self.config.inputs is AdaptorInputs.POOLED:
            if features.dim() != 2 or features.shape[1] != expected_dim:
                raise ValueError(
                    f"Adaptor ({self.config.inputs.value} inputs): {modality} features must be "
                    f"(batch, {expected_dim}), got {tuple(features.shape)}; check {modality}_dim and inputs."
                )
            if mask is not None:
                raise ValueError(
                    f"Adaptor ({self.config.inputs.value} inputs): a {modality} mask makes sense only for "
                    "tokens; pass None or build the Adaptor with inputs='tokens'."
                )
            stream = projection(features.unsqueeze(1).to(projection.weight.dtype))
            return F.normalize(stream, dim=-1), None
        return self._project_tokens(projection, features, mask, modality)

    def _project_tokens(
        self, projection: nn.Linear, features: Tensor, mask: Tensor | None, modality: str
    ) -> tuple[Tensor, Tensor]:
        """(B, T, D) token features as a unit-norm (B, T, P) stream, padded tokens zeroed, and the checked mask."""
        expected_dim = projection.in_features
        if features.dim() != 3 or features.shape[2] != expected_dim:
            raise ValueError(
                f"Adaptor: {modality} token features must be (batch, tokens, {expected_dim}), got "
                f"{tuple(features.shape)}; check {modality}_dim and inputs ({self.config.inputs.value})."
            )
        mask = self._checked_mask(features, mask, modality)
        features = features.masked_fill(~mask.unsqueeze(-1), 0.0)
        stream = projection(features.to(projection.weight.dtype))
        return F.normalize(stream, dim=-1), mask

    @staticmethod
    def _checked_mask(features: Tensor, mask: Tensor | None, modality: str) -> Tensor:
        if mask is None:
            return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        if mask.dtype != torch.bool or mask.shape != features.shape[:2]:
            raise ValueError(
                f"Adaptor: {modality}_mask must be a bool tensor of shape {tuple(features.shape[:2])} "
                f"(True = real token), got {mask.dtype} {tuple(mask.shape)}."
            )
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"Adaptor: {modality} sample(s) at batch position(s) {empty} have no real token; "
                "drop them (the cache's valid mask marks them) before calling the Adaptor."
            )
        return mask


def _pool_and_normalise(stream: Tensor, mask: Tensor | None) -> Tensor:
    """Masked mean over real tokens of a (B, T, P) stream, L2-normalised to (B, P)."""
    if mask is None:
        pooled = stream.mean(dim=1)
    else:
        weights = mask.unsqueeze(-1).to(stream.dtype)
        pooled = (stream * weights).sum(dim=1) / weights.sum(dim=1)
    return F.normalize(pooled, dim=-1)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of scalars the optimiser updates (parameters with requires_grad)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
