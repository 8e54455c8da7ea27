"""The backbone registry as data, and `adaptor extract backbones` that lists it."""
import dataclasses
import json

import pytest
from huggingface_hub import constants as hub_constants
from typer.testing import CliRunner

from adaptor_vlp.extract.backbones import BACKBONES, BackboneSpec, Modality, Pooling, Source, UnknownBackbone, get_spec
from adaptor_vlp.extract.cli import app


def test_paper_backbones_are_registered_with_the_paper_settings():
    dinov2 = get_spec("dinov2-s")
    assert (dinov2.modality, dinov2.source, dinov2.model_id) == (
        Modality.IMAGE,
        Source.TIMM,
        "vit_small_patch14_dinov2.lvd142m",
    )
    assert dinov2.image_size == 224 and dinov2.mean == dinov2.std == (0.5, 0.5, 0.5)
    assert dinov2.pooling is Pooling.CLS and dinov2.dim == 384
    assert get_spec("dinov2-b").dim == 768
    assert get_spec("resnet50").pooling is Pooling.MEAN
    for name in ("bert", "biobert", "clinicalbert", "pubmedbert"):
        text = get_spec(name)
        assert text.modality is Modality.TEXT and text.pooling is Pooling.POOLER and text.max_length == 112


def test_random_init_backbones_name_their_seed_in_the_weights_id():
    seeds = set()
    for spec in BACKBONES.values():
        if spec.is_random_init:
            assert spec.weights_id == f"random-init:seed={spec.random_init_seed}"
            seeds.add(spec.random_init_seed)
        else:
            assert spec.weights_id == spec.model_id
    assert {"tiny-vit", "tiny-resnet", "tiny-bert"} <= set(BACKBONES)
    assert len(seeds) == sum(spec.is_random_init for spec in BACKBONES.values()), "each random-init backbone has its own seed"


def test_unknown_backbone_error_lists_the_known_names():
    with pytest.raises(UnknownBackbone, match="unknown backbone 'vit-huge'.*dinov2-s.*tiny-bert"):
        get_spec("vit-huge")


def test_a_random_text_backbone_needs_its_architecture():
    with pytest.raises(ValueError, match="random_text_config"):
        dataclasses.replace(get_spec("tiny-bert"), random_text_config=None)
    with pytest.raises(ValueError, match="random_text_config"):
        dataclasses.replace(get_spec("tiny-bert"), random_init_seed=None)


def test_pooler_pooling_is_rejected_for_image_backbones():
    with pytest.raises(ValueError, match="pooler pooling exists only for text"):
        BackboneSpec(
            name="odd", modality=Modality.IMAGE, source=Source.TIMM, model_id="test_vit", dim=64, pooling=Pooling.POOLER
        )


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))


def test_cli_lists_the_registry_as_json(empty_hub_cache):
    result = CliRunner().invoke(app, ["backbones", "--json"])

    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == set(BACKBONES)
    assert rows["dinov2-s"] == {
        "name": "dinov2-s",
        "modality": "image",
        "source": "timm",
        "dim": 384,
        "input": "224px",
        "pooling": "cls",
        "weights_id": "vit_small_patch14_dinov2.lvd142m",
        "available": False,
    }
    assert rows["minilm"]["available"] and rows["tiny-bert"]["available"]
    assert rows["tiny-bert"]["input"] == "112 tokens"


def test_cli_lists_the_registry_as_a_table(empty_hub_cache):
    result = CliRunner().invoke(app, ["backbones"])

    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split() == ["name", "modality", "source", "dim", "input", "pooling", "weights_id", "available"]
    assert len(lines) == len(BACKBONES)
    bert = next(line for line in lines if line.startswith("bert "))
    assert bert.split() == ["bert", "text", "transformers", "768", "112", "tokens", "pooler", "bert-base-uncased", "no"]
