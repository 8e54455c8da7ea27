"""Files already on this machine: the local Hugging Face cache, and the errors for what is not there.

Nothing here downloads. A model repository is looked up in the cache that HF_HOME / HF_HUB_CACHE
name (the layout `huggingface-cli download` writes: models--ORG--NAME/snapshots/COMMIT/...).
"""
from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

CONFIG_FILE = "config.json"


class MissingWeights(FileNotFoundError):
    """A backbone's weights are not on this machine (and will not be downloaded)."""

    def __init__(self, backbone: str, weights_id: str, detail: str, how_to_supply: str) -> None:
        self.backbone = backbone
        self.weights_id = weights_id
        super().__init__(f"weights for backbone {backbone!r} ({weights_id}) are not available offline: "
                         f"{detail}. {how_to_supply}")


class IncompatibleWeights(ValueError):
    """A checkpoint was found but does not fit the backbone's architecture or settings."""


def hub_download_hint(repo_id: str) -> str:
    """How to bring a Hugging Face repository onto this machine, in one sentence."""
    return (f"Supply them with --weights PATH (a local checkpoint file or model folder), or on a machine with "
            f"internet run `huggingface-cli download {repo_id}` and copy its Hugging Face cache here, or set "
            f"HF_HOME to a folder that holds such a cache.")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process reads (HF_HUB_CACHE, else HF_HOME/hub)."""
    return Path(hub_constants.HF_HUB_CACHE)


def cached_file(repo_id: str, filename: str) -> Path | None:
    """The path of `filename` in the cached snapshot of `repo_id`, or None when it is not cached."""
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found) if isinstance(found, str) else None


def read_json(path: Path) -> dict:
    """A JSON object from a model folder; IncompatibleWeights names the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise IncompatibleWeights(f"{path} is not a readable JSON file: {error}") from error
    if not isinstance(data, dict):
        raise IncompatibleWeights(f"{path} does not hold a JSON object")
    return data
