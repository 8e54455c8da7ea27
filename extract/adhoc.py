"""Backbones named directly, without a registry entry: `timm:<model name with tag>` and `hf:<hub id>`.

The spec is read from the model's own configuration: timm's pretrained config (input size,
interpolation, crop fraction and mode, mean, std), or, for a Hugging Face model in the local
cache, its config.json (model type, width, towers), its preprocessor_config.json (resize, crop,
resample, mean, std) and its tokenizer's maximum length. Whatever cannot be read is refused
with what to write in a registry file instead.
"""
from __future__ import annotations

import math

import timm
import torch
from timm.data import resolve_data_config
from transformers import CONFIG_MAPPING

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.extract.backbone_spec import (
    BackboneSpec,
    ImagePreprocessing,
    ImageStep,
    Interpolation,
    Pooling,
    Source,
    SpecError,
    StepOp,
)
from adaptor_vlp.extract.local_files import (
    CONFIG_FILE,
    MissingWeights,
    cached_file,
    hub_cache_dir,
    hub_download_hint,
    read_json,
)

TIMM_SCHEME = "timm:"
HF_SCHEME = "hf:"
ADHOC_SCHEMES = (TIMM_SCHEME, HF_SCHEME)
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SENTENCE_TRANSFORMERS_POOLING_FILE = "1_Pooling/config.json"
PIL_RESAMPLE = {2: Interpolation.BILINEAR, 3: Interpolation.BICUBIC}
"""Pillow's resample codes, as image processors store them."""
TIMM_INTERPOLATION = {"bicubic": Interpolation.BICUBIC, "bilinear": Interpolation.BILINEAR}
POOLING_HEAD_MODEL_TYPES = ("siglip_vision_model", "siglip_text_model", "siglip2_vision_model", "siglip2_text_model")
"""Towers whose pooler_output is their trained embedding head (SigLIP's attention pool / text head)."""
REGISTRY_HINT = "write a registry entry for it instead (see `adaptor extract backbones` and README, 'Backbones')"


def adhoc_spec(name: str, modality: Modality | None) -> BackboneSpec:
    """The spec of an ad-hoc backbone name; `modality` picks the tower of a two-tower model."""
    scheme, _, model = name.partition(":")
    if not model:
        raise SpecError(f"backbone {name!r} names no model after {scheme}:")
    if name.startswith(TIMM_SCHEME):
        return _timm_spec(name, model)
    return _hf_spec(name, model, modality)


def timm_pretrained_cfg(model_name: str) -> "timm.models.PretrainedCfg | None":
    """timm's pretrained config of a model name with tag; None when timm has none (or not that tag)."""
    try:
        return timm.models.get_pretrained_cfg(model_name)
    except RuntimeError:  # timm's "invalid pretrained tag"
        return None


def _timm_spec(name: str, model_name: str) -> BackboneSpec:
    architecture = model_name.split(".")[0]
    if not timm.is_model(architecture):
        raise SpecError(f"backbone {name!r}: timm {timm.__version__} has no model {architecture!r}")
    pretrained_cfg = timm_pretrained_cfg(model_name)
    if pretrained_cfg is None:
        raise SpecError(f"backbone {name!r}: timm has no pretrained config {model_name!r} (check the tag)")
    config = pretrained_cfg.to_dict()
    origin = "timm's pretrained config"
    hub_config = cached_file(pretrained_cfg.hf_hub_id, CONFIG_FILE) if pretrained_cfg.hf_hub_id else None
    if hub_config is not None and isinstance(read_json(hub_config).get("pretrained_cfg"), dict):
        config = {**config, **read_json(hub_config)["pretrained_cfg"]}
        origin = str(hub_config)
    data = resolve_data_config({}, pretrained_cfg=config)
    _, height, width = data["input_size"]
    if height != width:
        raise SpecError(f"backbone {name!r}: input size {height} x {width} is not square; {REGISTRY_HINT}")
    interpolation = TIMM_INTERPOLATION.get(data["interpolation"])
    if interpolation is None:
        raise SpecError(f"backbone {name!r}: interpolation {data['interpolation']!r} is not supported; {REGISTRY_HINT}")
    scale_size = math.floor(height / data["crop_pct"])  # as timm's create_transform computes it
    first = {"center": StepOp.RESIZE_SHORTEST, "squash": StepOp.RESIZE}.get(data["crop_mode"])
    if first is None:
        raise SpecError(f"backbone {name!r}: crop mode {data['crop_mode']!r} is not supported; {REGISTRY_HINT}")
    with torch.device("meta"):
        network = timm.create_model(model_name, pretrained=False)
    global_pool = getattr(network, "global_pool", None)
    return BackboneSpec(
        name=name, modality=Modality.IMAGE, source=Source.TIMM, model_id=model_name, dim=network.num_features,
        pooling=Pooling.CLS if global_pool == "token" else Pooling.MEAN,
        image=ImagePreprocessing(
            steps=(ImageStep(first, scale_size, interpolation), ImageStep(StepOp.CENTER_CROP, height)),
            mean=tuple(data["mean"]), std=tuple(data["std"]),
        ),
        notes=f"read from {origin} (input size, interpolation, crop_pct, crop_mode, mean, std)",
    )


def _hf_spec(name: str, repo_id: str, modality: Modality | None) -> BackboneSpec:
    config_path = cached_file(repo_id, CONFIG_FILE)
    if config_path is None:
        raise MissingWeights(name, repo_id, f"{repo_id} is not in the Hugging Face cache at {hub_cache_dir()}",
                             hub_download_hint(repo_id))
    config = read_json(config_path)
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        remote = " and asks for remote code (auto_map), which this tool never runs" if "auto_map" in config else ""
        raise SpecError(f"backbone {name!r}: {config_path} has model_type {model_type!r}, which transformers does "
                        f"not know{remote}; if its encoder is a standard architecture, {REGISTRY_HINT} with "
                        "architecture = \"bert\" (or that architecture's model type)")
    tower, tower_modality = _tower(name, config, modality)
    dim = tower.get("hidden_size")
    if not isinstance(dim, int):
        raise SpecError(f"backbone {name!r}: {config_path} names no hidden_size; {REGISTRY_HINT}")
    common = dict(name=name, modality=tower_modality, source=Source.TRANSFORMERS, model_id=repo_id, dim=dim)
    if tower_modality is Modality.IMAGE:
        pooling = Pooling.POOLER if tower.get("model_type") in POOLING_HEAD_MODEL_TYPES else Pooling.CLS
        image, processor_path = _hf_image_preprocessing(name, repo_id)
        return BackboneSpec(**common, pooling=pooling, image=image,
                            notes=f"read from {config_path} and {processor_path}")
    return BackboneSpec(**common, pooling=_hf_text_pooling(repo_id, tower), max_length=_hf_max_length(repo_id, tower),
                        notes=f"read from {config_path} and the tokenizer's config")


def _tower(name: str, config: dict, modality: Modality | None) -> tuple[dict, Modality]:
    """The config of the tower to embed with, and its modality."""
    if isinstance(config.get("vision_config"), dict) and isinstance(config.get("text_config"), dict):
        if modality is None:
            raise SpecError(f"backbone {name!r} has an image and a text tower; say which modality you want")
        key = "vision_config" if modality is Modality.IMAGE else "text_config"
        return config[key], modality
    is_vision = "patch_size" in config and "vocab_size" not in config
    return config, Modality.IMAGE if is_vision else Modality.TEXT


def _hf_image_preprocessing(name: str, repo_id: str) -> tuple[ImagePreprocessing, str]:
    path = cached_file(repo_id, PREPROCESSOR_FILE)
    if path is None:
        raise SpecError(f"backbone {name!r}: {repo_id} has no {PREPROCESSOR_FILE} in the cache; {REGISTRY_HINT}")
    processor = read_json(path)
    if processor.get("do_rescale", True) and not math.isclose(processor.get("rescale_factor", 1 / 255), 1 / 255,
                                                               rel_tol=1e-6):
        raise SpecError(
            f"backbone {name!r}: {path} rescales by {processor['rescale_factor']}, not 1/255; {REGISTRY_HINT}"
        )
    steps = []
    if processor.get("do_resize", True):
        resample = PIL_RESAMPLE.get(processor.get("resample", 3))
        if resample is None:
            raise SpecError(f"backbone {name!r}: {path} resample {processor.get('resample')!r} is not supported; "
                            f"{REGISTRY_HINT}")
        steps.append(_resize_step(name, path, processor.get("size", {}), resample))
    if processor.get("do_center_crop", False):
        crop = processor.get("crop_size", {})
        side = crop if isinstance(crop, int) else crop.get("height")
        if not isinstance(side, int) or (isinstance(crop, dict) and crop.get("width", side) != side):
            raise SpecError(f"backbone {name!r}: {path} crop_size {crop!r} is not a square; {REGISTRY_HINT}")
        steps.append(ImageStep(StepOp.CENTER_CROP, side))
    normalise = processor.get("do_normalize", True)
    try:
        image = ImagePreprocessing(
            steps=tuple(steps),
            mean=tuple(processor.get("image_mean", (0.0,) * 3)) if normalise else (0.0,) * 3,
            std=tuple(processor.get("image_std", (1.0,) * 3)) if normalise else (1.0,) * 3,
        )
    except SpecError as error:
        raise SpecError(f"backbone {name!r}: {path}: {error}; {REGISTRY_HINT}") from None
    return image, str(path)


def _resize_step(name: str, path, size: dict | int, resample: Interpolation) -> ImageStep:
    if isinstance(size, int):
        return ImageStep(StepOp.RESIZE_SHORTEST, size, resample)
    if "shortest_edge" in size and "longest_edge" not in size:
        return ImageStep(StepOp.RESIZE_SHORTEST, size["shortest_edge"], resample)
    if "height" in size and size.get("width") == size["height"]:
        return ImageStep(StepOp.RESIZE, size["height"], resample)
    raise SpecError(f"backbone {name!r}: {path} size {size!r} is not supported; {REGISTRY_HINT}")


def _hf_text_pooling(repo_id: str, tower: dict) -> Pooling:
    """A sentence-transformers model's own pooling, SigLIP's text head, else the [CLS] state."""
    pooling_path = cached_file(repo_id, SENTENCE_TRANSFORMERS_POOLING_FILE)
    if pooling_path is not None:
        pooling = read_json(pooling_path)
        if pooling.get("pooling_mode_mean_tokens"):
            return Pooling.MEAN
        if pooling.get("pooling_mode_cls_token"):
            return Pooling.CLS
    if tower.get("model_type") in POOLING_HEAD_MODEL_TYPES:
        return Pooling.POOLER
    return Pooling.CLS


def _hf_max_length(repo_id: str, tower: dict) -> int:
    """The tokenizer's model_max_length, bounded by the model's position embeddings."""
    bounds = [value for value in (tower.get("max_position_embeddings"),) if isinstance(value, int)]
    tokenizer_config = cached_file(repo_id, TOKENIZER_CONFIG_FILE)
    if tokenizer_config is not None:
        value = read_json(tokenizer_config).get("model_max_length")
        if isinstance(value, int):
            bounds.append(value)
    if not bounds:
        raise SpecError(f"hf:{repo_id}: neither the tokenizer nor the model names a maximum length; {REGISTRY_HINT}")
    return min(bounds)
