"""Hugging Face transformers checkpoints as frozen towers: text encoders and vision models.

A checkpoint folder is loaded as the model its config names (or as `spec.architecture`), one
tower of a two-tower model (SigLIP, CLIP) when the config holds both, never with remote code:
`trust_remote_code` is always False, and a config transformers does not know is refused with
what to do. A checkpoint that lacks tensors the model needs (BERT's pooler for `pooler`
pooling) is refused with their names rather than run through randomly initialised layers, unless
its entry sets `pooler_init_seed`: then the pooler is initialised as transformers initialises a
missing one, from that seed, so the same entry embeds the same way on every run.

Vision towers (`AutoModel` DINOv2, ViT, SigLIP vision, ...) give CLS, mean or pooler pooling
and patch tokens without the class or register tokens: whatever the sequence holds before the
(H / patch) x (W / patch) patches is a prefix and is dropped.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
import transformers
from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from adaptor_vlp.extract.backbone_spec import BackboneSpec, Modality, Pooling, SpecError
from adaptor_vlp.extract.library_output import library_output
from adaptor_vlp.extract.local_files import CONFIG_FILE, IncompatibleWeights, read_json

CONFIG_KEYS_NOT_FOR_ARCHITECTURE = ("model_type", "auto_map", "architectures")
MISSING_NAMES_SHOWN = 8


def load_transformers_model(spec: BackboneSpec, folder: Path, verbose: bool = False) -> torch.nn.Module:
    """The spec's tower from a checkpoint folder, float32, with every tensor it uses loaded from the checkpoint."""
    with library_output(verbose):
        tower_config = _tower_config(spec, _config(spec, folder))
        model_class = _model_class(tower_config)
        options = {}
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            options["add_pooling_layer"] = spec.pooling is Pooling.POOLER
        try:
            model, loading_info = model_class.from_pretrained(
                folder, config=tower_config, local_files_only=True, trust_remote_code=False, dtype=torch.float32,
                output_loading_info=True, **options,
            )
        except (OSError, ValueError, RuntimeError) as error:
            raise IncompatibleWeights(f"{folder} does not load as {model_class.__name__}: {error}") from error
    missing = sorted(loading_info["missing_keys"])
    if spec.pooler_init_seed is not None and missing and set(missing) == set(POOLER_TENSORS):
        initialise_pooler(model, spec.pooler_init_seed)
        missing = []
    _refuse_missing_tensors(spec, folder, missing)
    return model


POOLER_TENSORS = ("pooler.dense.weight", "pooler.dense.bias")
"""BERT's pooler, tanh(dense([CLS])): a checkpoint trained without next-sentence prediction lacks these tensors."""


def initialise_pooler(model: torch.nn.Module, seed: int) -> None:
    """BERT's pooler as transformers initialises a missing one, drawn from a generator seeded with `seed`.

    `BertPreTrainedModel._init_weights` sets a Linear layer's weight to normal(0, initializer_range)
    and its bias to zero; here the draw comes from `torch.Generator().manual_seed(seed)`, so it is
    the draw `torch.manual_seed(seed)` followed at once by the same `normal_` call would give.
    """
    dense = model.pooler.dense
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.empty(dense.weight.shape, dtype=torch.float32)
        weight.normal_(mean=0.0, std=model.config.initializer_range, generator=generator)
        dense.weight.copy_(weight)
        dense.bias.zero_()


class VisionTower(torch.nn.Module):
    """A transformers vision model as (pooled, patch tokens); CLS needs a class token in front."""

    def __init__(self, network: torch.nn.Module, pooling: Pooling, patch_size: int) -> None:
        super().__init__()
        self.network = network
        self.pooling = pooling
        self.patch_size = patch_size

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.network(pixel_values=pixels)
        hidden = output.last_hidden_state
        patches = (pixels.shape[-2] // self.patch_size) * (pixels.shape[-1] // self.patch_size)
        prefix = hidden.shape[1] - patches
        tokens = hidden[:, prefix:]
        if self.pooling is Pooling.POOLER:
            return output.pooler_output, tokens
        if self.pooling is Pooling.MEAN:
            return tokens.mean(dim=1), tokens
        if prefix < 1:
            raise IncompatibleWeights(f"{type(self.network).__name__} has no class token to pool; use pooling "
                                      "\"pooler\" or \"mean\"")
        return hidden[:, 0], tokens


def vision_tower(spec: BackboneSpec, folder: Path, verbose: bool = False) -> VisionTower:
    """The spec's vision model from a checkpoint folder, wrapped to give pooled embeddings and patch tokens."""
    network = load_transformers_model(spec, folder, verbose)
    patch_size = getattr(network.config, "patch_size", None)
    if not isinstance(patch_size, int):
        raise IncompatibleWeights(f"{folder}: {type(network).__name__} is not a patch-based vision model "
                                  "(its config has no patch_size)")
    return VisionTower(network, spec.pooling, patch_size)


def _config(spec: BackboneSpec, folder: Path) -> PretrainedConfig:
    """The model config: as its config.json says, or as `spec.architecture` when the entry names one."""
    raw = read_json(folder / CONFIG_FILE)
    if spec.architecture is not None:
        if spec.architecture not in CONFIG_MAPPING:
            raise SpecError(f"backbone {spec.name!r}: transformers has no architecture {spec.architecture!r}")
        fields = {key: value for key, value in raw.items() if key not in CONFIG_KEYS_NOT_FOR_ARCHITECTURE}
        return CONFIG_MAPPING[spec.architecture](**fields)
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        remote = " and asks for remote code (auto_map), which this tool never runs" if "auto_map" in raw else ""
        raise IncompatibleWeights(
            f"{folder / CONFIG_FILE} has model_type {model_type!r}, which transformers does not know{remote}. "
            "If its encoder is a standard architecture, give the registry entry architecture = \"bert\" "
            "(or that architecture's model type)."
        )
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise IncompatibleWeights(f"{folder / CONFIG_FILE} does not load: {error}") from error


def _model_class(config: PretrainedConfig) -> type:
    """The bare model class of a config: AutoModel's mapping, else the tower class named after it.

    Tower configs of two-tower models (SiglipTextConfig, CLIPVisionConfig) are not all in
    AutoModel's mapping; transformers names their models after them (SiglipTextModel).
    """
    if type(config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(config)]
    name = type(config).__name__.removesuffix("Config") + "Model"
    model_class = getattr(transformers, name, None)
    if model_class is None:
        raise IncompatibleWeights(f"transformers has no bare model for {type(config).__name__}")
    return model_class


def _tower_config(spec: BackboneSpec, config: PretrainedConfig) -> PretrainedConfig:
    vision, text = getattr(config, "vision_config", None), getattr(config, "text_config", None)
    if vision is None or text is None:
        return config
    return vision if spec.modality is Modality.IMAGE else text


def _refuse_missing_tensors(spec: BackboneSpec, folder: Path, missing: list[str]) -> None:
    if not missing:
        return
    shown = ", ".join(missing[:MISSING_NAMES_SHOWN]) + (" ..." if len(missing) > MISSING_NAMES_SHOWN else "")
    pooler = any(key.startswith("pooler.") for key in missing) and spec.pooling is Pooling.POOLER
    hint = ("; its pooling needs them: the checkpoint has no trained pooler, use pooling \"cls\" or \"mean\""
            if pooler else "")
    raise IncompatibleWeights(f"{folder} lacks {len(missing)} tensor(s) backbone {spec.name!r} needs, which would "
                              f"be randomly initialised: {shown}{hint}")
