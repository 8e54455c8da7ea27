"""Backbones named directly (`timm:` / `hf:`), configured from the model's own files, and run from the timm hub
layout."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore, Modality, store_path
from adaptor_vlp.extract.backbones import ImageStep, Interpolation, Pooling, SpecError, StepOp, get_spec
from adaptor_vlp.extract.cli import app
from adaptor_vlp.extract.encoders import load_image_encoder
from adaptor_vlp.extract.weights import MissingWeights

from .published_layouts import hub_snapshot, save_timm_model


def test_a_timm_name_takes_its_input_size_crop_and_statistics_from_timms_pretrained_config():
    spec = get_spec("timm:test_vit.r160_in1k")

    assert (spec.dim, spec.pooling, spec.model_id) == (64, Pooling.CLS, "test_vit.r160_in1k")
    assert spec.image.steps == (ImageStep(StepOp.RESIZE_SHORTEST, 168, Interpolation.BICUBIC),  # floor(160 / 0.95)
                                ImageStep(StepOp.CENTER_CROP, 160))
    assert spec.image.mean == spec.image.std == (0.5, 0.5, 0.5)
    assert get_spec("timm:resnet18.a1_in1k").pooling is Pooling.MEAN


def test_a_timm_name_prefers_the_pretrained_config_in_its_cached_hub_repository(hub_cache):
    save_timm_model(hub_cache, "test_vit.r160_in1k", seed=0)
    config_file = hub_snapshot(hub_cache, "timm/test_vit.r160_in1k") / "config.json"
    config = json.loads(config_file.read_text())
    config["pretrained_cfg"]["mean"] = [0.25, 0.25, 0.25]
    config_file.write_text(json.dumps(config))

    spec = get_spec("timm:test_vit.r160_in1k")

    assert spec.image.mean == (0.25, 0.25, 0.25) and str(config_file) in spec.notes


def test_unknown_timm_models_and_tags_are_refused():
    with pytest.raises(SpecError, match="has no model 'no_such_net'"):
        get_spec("timm:no_such_net")
    with pytest.raises(SpecError, match="no pretrained config 'test_vit.no_such_tag'"):
        get_spec("timm:test_vit.no_such_tag")
    with pytest.raises(SpecError, match="names no model"):
        get_spec("hf:")


def test_an_hf_name_that_is_not_cached_says_how_to_get_it(hub_cache):
    with pytest.raises(MissingWeights, match="huggingface-cli download test-org/absent"):
        get_spec("hf:test-org/absent", modality=Modality.IMAGE)


def test_a_timm_model_runs_from_its_published_hub_layout(hub_cache):
    source = save_timm_model(hub_cache, "test_vit.r160_in1k", seed=3).eval()
    encoder = load_image_encoder("timm:test_vit.r160_in1k")
    pixels = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        reference = source.forward_head(source.forward_features(pixels), pre_logits=True)
    torch.testing.assert_close(encoder.encode(pixels).pooled, reference)


def test_adaptor_extract_images_runs_a_timm_name_and_a_registry_entry_on_the_same_weights(hub_cache, tiny_dataset,
                                                                                        tmp_path):
    save_timm_model(hub_cache, "test_vit.r160_in1k", seed=4)
    registry = tmp_path / "mine.toml"
    registry.write_text("""
[backbones.my-test-vit]
modality = "image"
source = "timm"
model_id = "test_vit.r160_in1k"
dim = 64
pooling = "cls"
[backbones.my-test-vit.image]
steps = [{ op = "resize_longest", size = 180, interpolation = "area" }, { op = "pad_square" },
         { op = "center_crop", size = 160 }]
""")
    cache, _ = tiny_dataset
    runner = CliRunner()
    for backbone in ("timm:test_vit.r160_in1k", "my-test-vit"):
        result = runner.invoke(app, ["images", "--cache", str(cache), "--dataset", "tiny", "--backbone", backbone,
                                     "--workers", "0", "--registry", str(registry)])
        assert result.exit_code == 0, result.output

    adhoc = CacheStore.open(store_path(cache, "tiny", Modality.IMAGE, "timm:test_vit.r160_in1k"))
    entry = CacheStore.open(store_path(cache, "tiny", Modality.IMAGE, "my-test-vit"))
    assert adhoc.provenance.weights_sha256 == entry.provenance.weights_sha256
    assert adhoc.provenance.preprocessing["geometry"][0]["op"] == "resize_shortest"
    assert entry.provenance.preprocessing["geometry"][0] == {"op": "resize_longest", "size": 180,
                                                             "interpolation": "area", "rounded": True}
    valid = entry.read("valid")
    assert not np.allclose(adhoc.read("embedding")[valid], entry.read("embedding")[valid])


def test_a_store_built_with_another_geometry_is_refused_on_resume_naming_the_field(hub_cache, tiny_dataset, tmp_path):
    cache, _ = tiny_dataset
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    entry = """
[backbones.changing]
modality = "image"
source = "timm"
model_id = "test_vit"
dim = 64
pooling = "cls"
random_init_seed = 21
[backbones.changing.image]
steps = [{ op = "resize_shortest", size = 64, interpolation = "bicubic" }, { op = "center_crop", size = 64 }]
"""
    old.write_text(entry)
    new.write_text(entry.replace('{ op = "resize_shortest", size = 64, interpolation = "bicubic" }',
                                 '{ op = "resize_longest", size = 64, interpolation = "bicubic" }, '
                                 '{ op = "pad_square" }'))
    runner = CliRunner()
    arguments = ["images", "--cache", str(cache), "--dataset", "tiny", "--backbone", "changing", "--workers", "0"]
    assert runner.invoke(app, [*arguments, "--registry", str(old)]).exit_code == 0

    result = runner.invoke(app, [*arguments, "--registry", str(new)])

    assert result.exit_code == 2
    assert "provenance field 'preprocessing.geometry' differs" in result.output
    assert "resize_longest" in result.output and "resize_shortest" in result.output


def test_an_hf_text_models_length_is_capped_at_112_unless_max_length_is_given(hub_cache, tiny_dataset):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from adaptor_vlp.extract.weights import locate_weights

    snapshot = hub_snapshot(hub_cache, "test-org/tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=512)).save_pretrained(snapshot)
    AutoTokenizer.from_pretrained(locate_weights(get_spec("minilm"))).save_pretrained(snapshot)

    assert get_spec("hf:test-org/tiny-bert", modality=Modality.TEXT).max_length == 112
    assert get_spec("hf:test-org/tiny-bert", modality=Modality.TEXT, max_length=300).max_length == 300
    cache, _ = tiny_dataset
    result = CliRunner().invoke(app, ["texts", "--cache", str(cache), "--dataset", "tiny", "--backbone",
                                      "hf:test-org/tiny-bert", "--max-length", "24", "--tokens"])
    assert result.exit_code == 0, result.output
    store = CacheStore.open(store_path(cache, "tiny", Modality.TEXT, "hf:test-org/tiny-bert"))
    assert store.provenance.preprocessing["max_length"] == 24 and store.read("tokens").shape[1] == 24
    assert store.provenance.pooling == "cls"
