"""Loading frozen image and text backbones and running them to pooled and token embeddings.

An encoder is built once from a backbone spec, frozen (eval mode, no gradients), fingerprinted
(`weights_sha256`) and described (`preprocessing`), so every embedding it writes can carry exact
provenance. Outputs are float32 on the CPU whatever device ran the model.
"""
from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from adaptor_vlp.extract.adhoc import timm_pretrained_cfg
from adaptor_vlp.extract.backbone_spec import PositionEmbedding
from adaptor_vlp.extract.backbones import BackboneSpec, Modality, Pooling, Source, SpecError, get_spec
from adaptor_vlp.extract.hf_models import load_transformers_model, vision_tower
from adaptor_vlp.extract.hub_positions import HUB_INTERPOLATE_ANTIALIAS, HUB_INTERPOLATE_OFFSET, use_hub_positions
from adaptor_vlp.extract.image_transforms import image_preprocessing
from adaptor_vlp.extract.library_output import library_output
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.weights import IncompatibleWeights, locate_tokenizer, locate_weights, weights_sha256
from adaptor_vlp.extract.xrv_autoencoder import build_autoencoder

TIMM_GLOBAL_POOL = {Pooling.CLS: "token", Pooling.MEAN: "avg"}
MAP_LEVELS = 4
MAP_REDUCTIONS = (2, 4, 8, 16)
"""Where the published U-Net's skip maps sit: 1/2, 1/4, 1/8 and 1/16 of the input (models/seg_models.py:49-52)."""


@dataclass(frozen=True)
class EncoderOutput:
    """One batch's embeddings: pooled (B, D), and optionally tokens (B, T, D) with a (B, T) mask."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    feature_maps: tuple[torch.Tensor, ...] | None = None
    """A CNN's four intermediate maps (B, C, H, W) at 1/2 .. 1/16 of the input (`--feature-maps`)."""


class NoFeatureMaps(ValueError):
    """Feature maps were asked of a backbone whose tower has no intermediate maps at strides 2, 4, 8 and 16."""


class FrozenEncoder:
    """What image and text encoders share: the spec, the frozen model, its fingerprint, its device."""

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device: torch.device,
                 precision: Precision = Precision.AUTO) -> None:
        self.spec = spec
        self.weights_sha256 = weights_sha256(model)
        self.device = device
        self.precision = precision.on(device)
        self.model = model.eval().requires_grad_(False).to(device)

    @property
    def weights_id(self) -> str:
        return self.spec.weights_id

    @property
    def dim(self) -> int:
        return self.spec.dim

    @contextmanager
    def _running(self) -> Iterator[None]:
        """Inference mode, in bf16 autocast when that is the encoder's precision."""
        bf16 = self.precision is Precision.BFLOAT16
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            yield


class ImageEncoder(FrozenEncoder):
    """A frozen image tower: any module mapping (B, C, S, S) pixels to (pooled (B, D), tokens (B, T, D)).

    Towers: timm models (CLS after the final norm, or global average pooling), transformers
    vision models (`extract.hf_models`) and torchxrayvision autoencoders (`extract.xrv_autoencoder`).
    Tokens are a ViT's patch tokens without class/register tokens, or a CNN's final feature map
    flattened row-major; their count `token_count` is fixed by the input size.
    """

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device: torch.device,
                 precision: Precision = Precision.AUTO) -> None:
        super().__init__(spec, model, device, precision)
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.channels = spec.image.channels
        self._map_shapes: tuple[tuple[int, int, int], ...] | None = None
        probe = self.encode(torch.zeros(1, self.channels, spec.image_size, spec.image_size), with_tokens=True)
        if probe.pooled.shape[-1] != spec.dim or probe.tokens.shape[-1] != spec.dim:
            raise IncompatibleWeights(
                f"backbone {spec.name!r} produced {probe.pooled.shape[-1]}-dim embeddings "
                f"and {probe.tokens.shape[-1]}-dim tokens; its registry entry says {spec.dim}"
            )
        self.token_count: int = probe.tokens.shape[1]

    @property
    def preprocessing(self) -> dict:
        """The image path's record; a hub-interpolated position table adds how (absent: the library's own way)."""
        record = {**image_preprocessing(self.spec), "source": self.spec.source.value,
                  "pooling": self.spec.pooling.value}
        if self.spec.position_embedding is PositionEmbedding.HUB_INTERPOLATED:
            record["position_embedding"] = {"method": self.spec.position_embedding.value, "mode": "bicubic",
                                            "interpolate_offset": HUB_INTERPOLATE_OFFSET,
                                            "antialias": HUB_INTERPOLATE_ANTIALIAS}
        return record

    def feature_map_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """(channels, height, width) of the four maps `encode(..., with_feature_maps=True)` returns, finest first
        (probed once: NoFeatureMaps for a backbone without them)."""
        if self._map_shapes is None:
            size = self.spec.image_size
            probe = self.encode(torch.zeros(1, self.channels, size, size), with_feature_maps=True)
            self._map_shapes = tuple(tuple(level.shape[1:]) for level in probe.feature_maps)
        return self._map_shapes

    def encode(self, pixels: torch.Tensor, with_tokens: bool = False, with_feature_maps: bool = False) -> EncoderOutput:
        """Embeds a (B, C, S, S) batch from `extract.image_transforms.preprocess`."""
        size = self.spec.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (self.channels, size, size):
            raise ValueError(
                f"backbone {self.spec.name!r} takes (B, {self.channels}, {size}, {size}) pixels, "
                f"got {tuple(pixels.shape)}"
            )
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        pixels = pixels.to(self.device, dtype=torch.float32, memory_format=memory_format)
        maps = None
        with self._running():
            if with_feature_maps:
                pooled, tokens, maps = self._maps_tower().forward_with_maps(pixels)
                maps = tuple(_to_cpu_float(level) for level in maps)
            else:
                pooled, tokens = self.model(pixels)
        if not with_tokens:
            return EncoderOutput(pooled=_to_cpu_float(pooled), feature_maps=maps)
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        return EncoderOutput(pooled=_to_cpu_float(pooled), tokens=_to_cpu_float(tokens), token_mask=token_mask,
                             feature_maps=maps)

    def _maps_tower(self) -> torch.nn.Module:
        """The tower, when it can return intermediate maps; else NoFeatureMaps naming the backbone."""
        if not hasattr(self.model, "forward_with_maps") or not getattr(self.model, "has_feature_maps", True):
            raise NoFeatureMaps(f"backbone {self.spec.name!r} has no intermediate maps at 1/2, 1/4, 1/8 and 1/16 of "
                                "its input (a ResNet-style CNN: torchxrayvision's autoencoders, timm ResNets); "
                                "extract it without --feature-maps")
        return self.model


class TimmTower(torch.nn.Module):
    """A timm model as (pooled, tokens): its own head pooling (CLS after the final norm, or average)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network.forward_features(pixels)
        pooled = self.network.forward_head(features, pre_logits=True)
        if features.ndim == 4:
            return pooled, features.flatten(2).transpose(1, 2)
        return pooled, features[:, self.network.num_prefix_tokens :, :]

    @property
    def has_feature_maps(self) -> bool:
        """A CNN whose first four feature stages sit at 1/2, 1/4, 1/8 and 1/16 of its input (a timm ResNet)."""
        info = getattr(self.network, "feature_info", None)
        reductions = [stage["reduction"] for stage in info] if isinstance(info, list) else []
        return reductions[:MAP_LEVELS] == list(MAP_REDUCTIONS) and hasattr(self.network, "forward_intermediates")

    def forward_with_maps(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(pooled, tokens) as `forward`, and the outputs of its first four feature stages (timm's feature_info)."""
        features, stages = self.network.forward_intermediates(pixels, indices=len(self.network.feature_info))
        pooled = self.network.forward_head(features, pre_logits=True)
        return pooled, features.flatten(2).transpose(1, 2), list(stages[:MAP_LEVELS])


@dataclass(frozen=True)
class ReportTokenizer:
    """A text backbone's tokenisation of a batch of reports: every text padded and truncated to `max_length`.

    Small and picklable, so the reader's worker processes can tokenise batches ahead of the forward pass.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("tokenise a list of texts, not one string")
        return dict(self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))


class TextEncoder(FrozenEncoder):
    """A frozen transformers text backbone with its tokenizer, padding every text to max_length."""

    def __init__(
        self,
        spec: BackboneSpec,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        tokenizer_id: str,
        device: torch.device,
        precision: Precision = Precision.AUTO,
    ) -> None:
        if model.config.hidden_size != spec.dim:
            raise IncompatibleWeights(
                f"backbone {spec.name!r} has hidden size {model.config.hidden_size}; its registry entry says {spec.dim}"
            )
        if len(tokenizer) > model.config.vocab_size:
            raise IncompatibleWeights(
                f"the tokenizer of backbone {spec.name!r} has {len(tokenizer)} tokens but the model embeds only "
                f"{model.config.vocab_size}"
            )
        super().__init__(spec, model, device, precision)
        self.tokenizer = tokenizer
        self.tokenization = ReportTokenizer(tokenizer, spec.max_length)
        self.tokenizer_id = tokenizer_id
        self.token_count: int = spec.max_length
        vocabulary = sorted(tokenizer.get_vocab().items())
        self._vocab_size = len(vocabulary)
        self._vocab_sha256 = hashlib.sha256(repr(vocabulary).encode()).hexdigest()

    @property
    def preprocessing(self) -> dict:
        """What shapes the embeddings besides the weights; `text_cleaning` and `pooler_init_seed` only when set."""
        return {
            **self.spec.text_record(),
            "tokenizer": self.tokenizer_id,
            "tokenizer_class": type(self.tokenizer).__name__,
            "lowercase": bool(getattr(self.tokenizer, "do_lower_case", False)),
            "vocab_size": self._vocab_size,
            "vocab_sha256": self._vocab_sha256,
            "max_length": self.spec.max_length,
            "padding": "max_length",
            "truncation": True,
            "pooling": self.spec.pooling.value,
        }

    def encode(self, texts: list[str], with_tokens: bool = False) -> EncoderOutput:
        """Embeds a batch of texts; tokens are the last hidden states, (B, max_length, D)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        return self.encode_tokenized(self.tokenization(texts), with_tokens)

    def encode_tokenized(self, tokenized: dict[str, torch.Tensor], with_tokens: bool = False) -> EncoderOutput:
        """Embeds a batch `self.tokenization` made (perhaps in another process): the forward pass alone."""
        batch = {key: value.to(self.device) for key, value in tokenized.items()}
        with self._running():
            output = self.model(**{key: value for key, value in batch.items() if key in self._forward_inputs})
        hidden = output.last_hidden_state.float()
        mask = batch["attention_mask"].bool()
        pooled = self._pool(output, hidden, mask)
        if not with_tokens:
            return EncoderOutput(pooled=_to_cpu_float(pooled))
        return EncoderOutput(pooled=_to_cpu_float(pooled), tokens=_to_cpu_float(hidden), token_mask=mask.cpu())

    @property
    def _forward_inputs(self) -> set[str]:
        """The tokenizer outputs the model takes (SigLIP's text tower takes no token_type_ids)."""
        return set(inspect.signature(self.model.forward).parameters)

    def _pool(self, output: ModelOutput, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.spec.pooling is Pooling.POOLER:
            return output.pooler_output
        if self.spec.pooling is Pooling.CLS:
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def load_image_encoder(
    backbone: str | BackboneSpec, weights: Path | None = None, device: str | torch.device = "cpu",
    precision: Precision = Precision.AUTO, verbose: bool = False,
) -> ImageEncoder:
    """The frozen image encoder of a registry entry (by name) or of a spec.

    `weights` is an explicit checkpoint file or folder; without it the weights are looked up
    offline (see `extract.weights.locate_weights`), and `MissingWeights` says how to supply them.
    `verbose` lets the libraries print their load reports and progress bars.
    """
    spec = _spec_of_modality(backbone, Modality.IMAGE)
    return ImageEncoder(spec, _build_image_tower(spec, weights, verbose), torch.device(device), precision)


def load_text_encoder(
    backbone: str | BackboneSpec, weights: Path | None = None, device: str | torch.device = "cpu",
    precision: Precision = Precision.AUTO, verbose: bool = False,
) -> TextEncoder:
    """The frozen text encoder (model + tokenizer) of a registry entry or of a spec."""
    spec = _spec_of_modality(backbone, Modality.TEXT)
    model = _build_text_model(spec, weights, verbose)
    tokenizer_spec = get_spec(spec.tokenizer_backbone) if spec.tokenizer_backbone else spec
    return TextEncoder(spec, model, _load_tokenizer(spec, weights, verbose), tokenizer_spec.model_id,
                       torch.device(device), precision)


def _spec_of_modality(backbone: str | BackboneSpec, modality: Modality) -> BackboneSpec:
    spec = get_spec(backbone, modality=modality) if isinstance(backbone, str) else backbone
    if spec.modality is not modality:
        raise ValueError(f"backbone {spec.name!r} is a {spec.modality.value} backbone, not a {modality.value} one")
    return spec


def _build_image_tower(spec: BackboneSpec, weights: Path | None, verbose: bool) -> torch.nn.Module:
    if spec.source is Source.TORCHXRAYVISION:
        return build_autoencoder(spec, None if spec.is_random_init else locate_weights(spec, weights))
    if spec.source is Source.TRANSFORMERS:
        if spec.is_random_init:
            raise SpecError(f"backbone {spec.name!r}: random initialisation of transformers vision models is not "
                            "supported; use a timm architecture")
        return vision_tower(spec, locate_weights(spec, weights), verbose)
    return TimmTower(_build_timm_model(spec, weights))


def _build_timm_model(spec: BackboneSpec, weights: Path | None) -> torch.nn.Module:
    options = {}
    pretrained_cfg = timm_pretrained_cfg(spec.model_id)
    hub_positions = spec.position_embedding is PositionEmbedding.HUB_INTERPOLATED
    if hub_positions:
        if pretrained_cfg is None:
            raise SpecError(f"backbone {spec.name!r}: hub position interpolation needs a timm model with a "
                            f"pretrained config (its native input size); {spec.model_id!r} has none")
        options.update(img_size=pretrained_cfg.input_size[-1], dynamic_img_size=True)
    elif pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        options["img_size"] = spec.image_size
    if spec.is_random_init:
        with _seeded(spec.random_init_seed):
            model = timm.create_model(spec.model_id, pretrained=False, **options)
    else:
        checkpoint = locate_weights(spec, weights)
        try:
            model = timm.create_model(
                spec.model_id, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}, **options
            )
        except (RuntimeError, OSError, ValueError) as error:
            raise IncompatibleWeights(f"{checkpoint} does not load into timm model {spec.model_id}: {error}") from error
    if spec.pooling not in TIMM_GLOBAL_POOL:
        raise SpecError(f"backbone {spec.name!r}: timm models pool by cls or mean, not {spec.pooling.value}")
    model.reset_classifier(0, global_pool=TIMM_GLOBAL_POOL[spec.pooling])
    return use_hub_positions(model) if hub_positions else model


def _build_text_model(spec: BackboneSpec, weights: Path | None, verbose: bool) -> torch.nn.Module:
    if spec.is_random_init:
        config = AutoConfig.for_model(spec.model_id, **asdict(spec.random_text_config))
        with _seeded(spec.random_init_seed):
            return AutoModel.from_config(config, add_pooling_layer=spec.pooling is Pooling.POOLER)
    return load_transformers_model(spec, locate_weights(spec, weights), verbose)


def _load_tokenizer(spec: BackboneSpec, weights: Path | None, verbose: bool) -> PreTrainedTokenizerBase:
    folder = locate_tokenizer(spec, weights)
    try:
        with library_output(verbose):
            return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise IncompatibleWeights(
            f"{folder}: the tokenizer of backbone {spec.name!r} does not load: {error}"
        ) from error


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Runs a block under a fixed torch seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _to_cpu_float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", dtype=torch.float32)
