"""Locating weights offline, the missing-weights message, and the weights fingerprint."""
import dataclasses
import time

import pytest
import torch
from huggingface_hub import constants as hub_constants

from adaptor_vlp.extract.backbones import get_spec
from adaptor_vlp.extract.weights import (
    MissingWeights,
    hub_repo_id,
    locate_tokenizer,
    locate_weights,
    weights_available,
    weights_sha256,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that the code under test will search."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def add_to_cache(cache, repo_id: str, filenames: list[str]):
    """Lays out a model repository in the Hugging Face cache format; returns its snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for filename in filenames:
        (snapshot / filename).write_text("{}")
    return snapshot


def test_missing_weights_name_the_identifier_and_how_to_supply_them_quickly(hub_cache):
    started = time.monotonic()
    with pytest.raises(MissingWeights) as raised:
        locate_weights(get_spec("bert"))

    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "bert-base-uncased" in message
    assert "--weights PATH" in message
    assert "huggingface-cli download bert-base-uncased" in message
    assert "HF_HOME" in message
    assert raised.value.weights_id == "bert-base-uncased"
    assert not weights_available(get_spec("bert"))


def test_transformers_weights_are_found_in_the_hub_cache(hub_cache):
    snapshot = add_to_cache(hub_cache, "bert-base-uncased", ["config.json", "model.safetensors", "vocab.txt"])

    assert locate_weights(get_spec("bert")) == snapshot
    assert weights_available(get_spec("bert"))


def test_cached_config_without_weights_is_still_missing(hub_cache):
    add_to_cache(hub_cache, "bert-base-uncased", ["config.json"])

    with pytest.raises(MissingWeights, match="model.safetensors"):
        locate_weights(get_spec("bert"))


def test_timm_weights_are_found_under_timms_hub_repository(hub_cache):
    spec = get_spec("dinov2-s")
    assert hub_repo_id(spec) == "timm/vit_small_patch14_dinov2.lvd142m"
    snapshot = add_to_cache(hub_cache, hub_repo_id(spec), ["model.safetensors"])

    assert locate_weights(spec) == snapshot / "model.safetensors"


def test_explicit_weights_path_wins_and_is_checked(tmp_path, hub_cache):
    spec = get_spec("dinov2-s")
    checkpoint = tmp_path / "dinov2" / "pytorch_model.bin"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")

    assert locate_weights(spec, checkpoint.parent) == checkpoint
    assert locate_weights(spec, checkpoint) == checkpoint
    with pytest.raises(MissingWeights, match="does not exist"):
        locate_weights(spec, tmp_path / "nowhere")
    with pytest.raises(MissingWeights, match="config.json"):
        locate_weights(get_spec("bert"), checkpoint.parent)


def test_packaged_minilm_weights_and_tokenizer_are_found_offline(hub_cache):
    folder = locate_weights(get_spec("minilm"))

    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert locate_tokenizer(get_spec("tiny-bert")) == folder


def test_random_init_backbones_take_no_weights_and_are_always_available(tmp_path, hub_cache):
    spec = get_spec("tiny-vit")

    assert weights_available(spec)
    with pytest.raises(ValueError, match="randomly initialised"):
        locate_weights(spec, tmp_path)


def seeded_linear(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_weights_hash_is_deterministic_and_sensitive_to_every_value():
    first, second = seeded_linear(0), seeded_linear(0)
    assert weights_sha256(first) == weights_sha256(second)

    with torch.no_grad():
        second[1].running_mean[2] += 1e-3
    assert weights_sha256(first) != weights_sha256(second)
    assert weights_sha256(first) != weights_sha256(seeded_linear(1))


def test_weights_hash_depends_on_dtype():
    module = seeded_linear(0)
    assert weights_sha256(module) != weights_sha256(seeded_linear(0).to(torch.float64))


def test_text_model_folder_without_a_vocabulary_has_no_tokenizer(tmp_path, hub_cache):
    snapshot = add_to_cache(hub_cache, "bert-base-uncased", ["config.json", "model.safetensors"])

    with pytest.raises(MissingWeights, match="no tokenizer vocabulary"):
        locate_tokenizer(get_spec("bert"))
    (snapshot / "vocab.txt").write_text("[PAD]\n")
    assert locate_tokenizer(get_spec("bert")) == snapshot


def test_a_random_init_text_backbone_needs_its_tokenizer_backbone(hub_cache):
    assert weights_available(get_spec("tiny-bert"))
    borrowing_from_bert = dataclasses.replace(get_spec("tiny-bert"), tokenizer_backbone="bert")

    assert not weights_available(borrowing_from_bert)
    with pytest.raises(MissingWeights, match="bert-base-uncased"):
        locate_tokenizer(borrowing_from_bert)
