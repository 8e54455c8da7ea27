"""Backbones written in the file layouts their libraries publish, with seeded random weights.

- timm: `models--timm--<name>/snapshots/<commit>/` holding model.safetensors and config.json
  (architecture, num_classes, pretrained_cfg), in a Hugging Face hub cache;
- transformers: a `save_pretrained` folder (config.json, model.safetensors, tokenizer and
  processor files) as the snapshot of its hub repository;
- torchxrayvision: its state dict under the file name its weights URL ends in, in its cache folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """An empty snapshot folder of `repo_id` in a hub cache, with refs/main pointing at it."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def save_timm_model(cache: Path, model_name: str, seed: int) -> torch.nn.Module:
    """A seeded timm model saved as timm publishes it on the hub; returns the model."""
    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False)
    pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
    snapshot = hub_snapshot(cache, pretrained_cfg.hf_hub_id)
    save_file(
        {name: tensor.contiguous() for name, tensor in model.state_dict().items()}, snapshot / "model.safetensors"
    )
    config = {"architecture": pretrained_cfg.architecture, "num_classes": model.num_classes,
              "num_features": model.num_features, "pretrained_cfg": pretrained_cfg.to_dict()}
    (snapshot / "config.json").write_text(json.dumps(config, default=list))
    return model


def save_transformers_model(cache: Path, repo_id: str, model, *extras) -> Path:
    """`model.save_pretrained` (and each extra's, e.g. a tokenizer or image processor) as a hub snapshot."""
    snapshot = hub_snapshot(cache, repo_id)
    model.save_pretrained(snapshot)
    for extra in extras:
        extra.save_pretrained(snapshot)
    return snapshot


def xrv_weights_file(home: Path) -> Path:
    """Where torchxrayvision looks for its ResNet-AE "101-elastic" weights under HOME."""
    import torchxrayvision as xrv

    url = xrv.autoencoders.model_urls["101-elastic"]["weights_url"]
    return Path(home) / ".torchxrayvision" / "models_data" / url.rsplit("/", 1)[-1]


def save_xrv_autoencoder(home: Path, seed: int) -> torch.nn.Module:
    """torchxrayvision's ResNet-101 autoencoder with seeded weights, its state dict saved where xrv expects it."""
    import torchxrayvision as xrv

    torch.manual_seed(seed)
    model = xrv.autoencoders.ResNetAE101()
    path = xrv_weights_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model
