"""Frozen image and text encoders: deterministic tiny backbones, pooling, tokens, real MiniLM."""
import dataclasses
import json

import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from adaptor_vlp.extract.backbones import Pooling, get_spec
from adaptor_vlp.extract.encoders import load_image_encoder, load_text_encoder
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.weights import IncompatibleWeights, MissingWeights, locate_weights

REPORTS = [
    "Large right pleural effusion with adjacent compressive atelectasis.",
    "There is a big pleural effusion on the right side with collapse of the nearby lung.",
    "The heart size is normal and the lungs are clear without pneumothorax.",
]


@pytest.fixture(scope="module")
def tiny_vit():
    return load_image_encoder("tiny-vit")


@pytest.fixture(scope="module")
def tiny_bert():
    return load_text_encoder("tiny-bert")


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def pixels(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, tokens", [("tiny-vit", 16), ("tiny-resnet", 4)])
def test_tiny_image_backbones_are_deterministic_frozen_and_shaped(name, tokens):
    first, second = load_image_encoder(name), load_image_encoder(name)
    spec = get_spec(name)

    assert first.weights_sha256 == second.weights_sha256
    assert first.weights_id == spec.weights_id and first.dim == spec.dim
    assert first.token_count == tokens
    assert not first.model.training
    assert not any(parameter.requires_grad for parameter in first.model.parameters())
    output = first.encode(pixels(2, spec.image_size, seed=0), with_tokens=True)
    assert output.pooled.shape == (2, spec.dim) and output.pooled.dtype == torch.float32
    assert output.tokens.shape == (2, tokens, spec.dim)
    assert output.token_mask.shape == (2, tokens) and output.token_mask.all()
    torch.testing.assert_close(output.pooled, second.encode(pixels(2, spec.image_size, seed=0)).pooled)


def test_different_tiny_backbones_have_different_hashes(tiny_vit):
    assert tiny_vit.weights_sha256 != load_image_encoder("tiny-resnet").weights_sha256


def test_vit_pooled_is_the_class_token_after_the_final_norm(tiny_vit):
    batch = pixels(2, tiny_vit.spec.image_size, seed=1)

    output = tiny_vit.encode(batch, with_tokens=True)

    with torch.no_grad():
        normed = tiny_vit.model.network.forward_features(batch)
    torch.testing.assert_close(output.pooled, normed[:, 0])
    torch.testing.assert_close(output.tokens, normed[:, 1:])


def test_resnet_pooled_is_the_average_of_its_feature_map_tokens():
    encoder = load_image_encoder("tiny-resnet")

    output = encoder.encode(pixels(3, encoder.spec.image_size, seed=2), with_tokens=True)

    torch.testing.assert_close(output.pooled, output.tokens.mean(dim=1))


def test_each_image_is_embedded_independently_of_its_batch(tiny_vit):
    batch = pixels(4, tiny_vit.spec.image_size, seed=3)

    together = tiny_vit.encode(batch).pooled
    alone = tiny_vit.encode(batch[2:3]).pooled

    torch.testing.assert_close(together[2:3], alone, rtol=1e-5, atol=1e-5)


def test_image_encoder_without_tokens_and_with_wrong_input(tiny_vit):
    output = tiny_vit.encode(pixels(1, tiny_vit.spec.image_size, seed=4))
    assert output.tokens is None and output.token_mask is None
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        tiny_vit.encode(pixels(1, 32, seed=4))


def test_image_preprocessing_record_is_json(tiny_vit):
    record = tiny_vit.preprocessing

    assert json.loads(json.dumps(record)) == record
    assert record["pooling"] == "cls" and record["image_size"] == 64


def test_modalities_are_not_mixed_up():
    with pytest.raises(ValueError, match="text backbone"):
        load_image_encoder("tiny-bert")
    with pytest.raises(ValueError, match="image backbone"):
        load_text_encoder("tiny-vit")


def test_missing_pretrained_weights_raise_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))

    with pytest.raises(MissingWeights, match="bert-base-uncased"):
        load_text_encoder("bert")
    with pytest.raises(MissingWeights, match="timm/vit_small_patch14_dinov2.lvd142m"):
        load_image_encoder("dinov2-s")


def test_timm_checkpoint_file_is_loaded(tmp_path):
    torch.manual_seed(7)
    source = timm.create_model("test_vit", img_size=64)
    checkpoint = tmp_path / "model.safetensors"
    save_file(source.state_dict(), checkpoint)
    spec = dataclasses.replace(
        get_spec("tiny-vit"), name="local-vit", model_id="test_vit.r160_in1k", random_init_seed=None
    )

    encoder = load_image_encoder(spec, weights=checkpoint)

    torch.testing.assert_close(encoder.model.network.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert encoder.weights_sha256 == load_image_encoder(spec, weights=tmp_path).weights_sha256
    assert encoder.weights_id == "test_vit.r160_in1k"


def test_timm_checkpoint_of_another_architecture_is_incompatible(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), checkpoint)
    spec = dataclasses.replace(get_spec("tiny-vit"), model_id="test_vit.r160_in1k", random_init_seed=None)

    with pytest.raises(IncompatibleWeights, match="model.safetensors"):
        load_image_encoder(spec, weights=checkpoint)


def test_tiny_bert_is_deterministic_and_pads_to_max_length(tiny_bert):
    again = load_text_encoder("tiny-bert")
    spec = get_spec("tiny-bert")

    assert tiny_bert.weights_sha256 == again.weights_sha256
    assert tiny_bert.token_count == spec.max_length == 112
    output = tiny_bert.encode(REPORTS, with_tokens=True)
    assert output.pooled.shape == (3, 32) and output.tokens.shape == (3, 112, 32)
    real_tokens = [len(tiny_bert.tokenizer(report)["input_ids"]) for report in REPORTS]
    assert output.token_mask.sum(dim=1).tolist() == real_tokens
    torch.testing.assert_close(output.pooled, again.encode(REPORTS).pooled)
    assert not any(parameter.requires_grad for parameter in tiny_bert.model.parameters())


def test_text_is_truncated_to_max_length(tiny_bert):
    output = tiny_bert.encode(["effusion " * 500], with_tokens=True)

    assert output.tokens.shape == (1, 112, 32) and output.token_mask.all()


def test_text_encoder_rejects_a_bare_string(tiny_bert):
    with pytest.raises(TypeError, match="list of texts"):
        tiny_bert.encode("one report")


def test_text_preprocessing_names_the_tokenizer_and_pooling(tiny_bert):
    record = tiny_bert.preprocessing

    assert json.loads(json.dumps(record)) == record
    assert record["tokenizer"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert record["max_length"] == 112 and record["pooling"] == "pooler"
    assert record["vocab_size"] == 30522 and len(record["vocab_sha256"]) == 64


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_minilm_ranks_a_paraphrase_above_an_unrelated_report(minilm):
    pooled = minilm.encode(REPORTS).pooled

    assert pooled.shape == (3, 384)
    assert cosine(pooled[0], pooled[1]) > cosine(pooled[0], pooled[2]) + 0.1


def test_bfloat16_forward_agrees_with_float32_to_bf16_rounding(minilm):
    in_bf16 = load_text_encoder("minilm", precision=Precision.BFLOAT16)
    assert (in_bf16.precision, minilm.precision) == (Precision.BFLOAT16, Precision.FLOAT32)

    full, reduced = minilm.encode(REPORTS).pooled, in_bf16.encode(REPORTS).pooled
    assert not torch.equal(full, reduced), "the bf16 encoder must really run in bf16"
    assert torch.nn.functional.cosine_similarity(full, reduced).min() > 0.999


def test_auto_precision_is_bfloat16_on_cuda_and_float32_elsewhere():
    assert Precision.AUTO.on(torch.device("cuda")) is Precision.BFLOAT16
    assert Precision.AUTO.on(torch.device("cpu")) is Precision.FLOAT32
    assert Precision.FLOAT32.on(torch.device("cuda")) is Precision.FLOAT32


def test_minilm_pools_by_masked_mean(minilm):
    output = minilm.encode(REPORTS[:2], with_tokens=True)

    mask = output.token_mask.unsqueeze(-1).float()
    torch.testing.assert_close(output.pooled, (output.tokens * mask).sum(1) / mask.sum(1))
    assert minilm.spec.pooling is Pooling.MEAN


@pytest.fixture(scope="module")
def saved_bert_without_pooler(tmp_path_factory):
    """A tiny BERT checkpoint folder (weights, config, tokenizer) lacking pooler weights."""
    folder = tmp_path_factory.mktemp("bert")
    config = AutoConfig.for_model(
        "bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=30522
    )
    torch.manual_seed(0)
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(locate_weights(get_spec("minilm"))).save_pretrained(folder)
    return folder


def local_bert_spec(pooling: Pooling):
    return dataclasses.replace(
        get_spec("tiny-bert"),
        name="local-bert",
        model_id="local/tiny-bert",
        random_init_seed=None,
        random_text_config=None,
        tokenizer_backbone=None,
        pooling=pooling,
    )


def test_text_weights_folder_is_loaded(saved_bert_without_pooler):
    encoder = load_text_encoder(local_bert_spec(Pooling.CLS), weights=saved_bert_without_pooler)

    output = encoder.encode(REPORTS, with_tokens=True)
    torch.testing.assert_close(output.pooled, output.tokens[:, 0])
    assert encoder.weights_id == "local/tiny-bert"


def test_pooler_pooling_on_a_checkpoint_without_pooler_is_refused(saved_bert_without_pooler):
    with pytest.raises(IncompatibleWeights, match="no trained pooler"):
        load_text_encoder(local_bert_spec(Pooling.POOLER), weights=saved_bert_without_pooler)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path):
    config = AutoConfig.for_model(
        "bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    AutoModel.from_config(config, add_pooling_layer=False).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(locate_weights(get_spec("minilm"))).save_pretrained(tmp_path)

    with pytest.raises(IncompatibleWeights, match="30522 tokens but the model embeds only 100"):
        load_text_encoder(local_bert_spec(Pooling.CLS), weights=tmp_path)
