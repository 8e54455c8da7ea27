"""The Adaptor: configuration, size, per-sample independence, masks, logit scale, gradients."""
import json
import math

import pytest
import torch
from torch import nn

from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import (
    Adaptor,
    AdaptorConfig,
    AdaptorInputs,
    CrossAttentionBlock,
    count_trainable_parameters,
)

IMAGE_DIM, TEXT_DIM, WIDTH = 12, 10, 16
POOLED, TOKENS = AdaptorInputs.POOLED, AdaptorInputs.TOKENS


def small_adaptor(inputs: AdaptorInputs, seed: int = 0) -> Adaptor:
    torch.manual_seed(seed)
    config = AdaptorConfig(
        image_dim=IMAGE_DIM, text_dim=TEXT_DIM, projection_dim=WIDTH, num_heads=4, ffn_dim=32, inputs=inputs
    )
    return Adaptor(config).eval()


def features(inputs: AdaptorInputs, batch: int, dim: int, tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, dim) if inputs is POOLED else (batch, tokens, dim)
    return torch.randn(shape, generator=generator)


def token_mask(lengths: list[int], tokens: int) -> torch.Tensor:
    return torch.arange(tokens).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def test_config_round_trips_through_json() -> None:
    config = AdaptorConfig(image_dim=384, text_dim=768, inputs=TOKENS, dropout=0.2)

    restored = AdaptorConfig.from_dict(json.loads(json.dumps(config.to_dict())))

    assert restored == config
    assert restored.inputs is TOKENS


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_dim": 4, "text_dim": 4, "hidden": 3}, "unknown key"),
        ({"image_dim": 4}, "missing required"),
        ({"image_dim": 4, "text_dim": 4, "inputs": "patches"}, "pooled"),
        ({"image_dim": 4, "text_dim": 4, "projection_dim": 10, "num_heads": 4}, "divisible"),
        ({"image_dim": 0, "text_dim": 4}, "image_dim"),
        ({"image_dim": 4, "text_dim": 4, "dropout": 1.0}, "dropout"),
    ],
)
def test_config_rejects_bad_values_with_a_named_reason(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptorConfig.from_dict(values)


@pytest.mark.parametrize(("image_dim", "expected"), [(768, 12_207_617), (384, 11_912_705)])
def test_paper_configuration_has_about_twelve_million_parameters(image_dim: int, expected: int) -> None:
    text_dim, width, ffn, layers = 768, 768, 2048, 2
    projections = image_dim * width + text_dim * width  # two bias-free linear maps
    attention = (3 * width * width + 3 * width) + (width * width + width)  # in-projection q,k,v + out-projection
    feed_forward = (width * ffn + ffn) + (ffn * width + width)  # two linear layers with biases
    layer_norms = 2 * (2 * width)  # two LayerNorms, weight and bias each
    logit_scale = 1
    by_hand = projections + layers * (attention + feed_forward + layer_norms) + logit_scale
    assert by_hand == expected

    model = Adaptor(AdaptorConfig(image_dim=image_dim, text_dim=text_dim))

    assert count_trainable_parameters(model) == by_hand


def test_count_skips_frozen_parameters() -> None:
    model = small_adaptor(POOLED)
    total = count_trainable_parameters(model)
    model.image_projection.weight.requires_grad_(False)

    assert count_trainable_parameters(model) == total - IMAGE_DIM * WIDTH


def test_logit_scale_starts_at_inverse_temperature_and_is_clamped_at_use() -> None:
    model = small_adaptor(POOLED)
    image, text = features(POOLED, 3, IMAGE_DIM, 1, seed=1), features(POOLED, 3, TEXT_DIM, 1, seed=2)

    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model(image, text).logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(image, text).logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert model(image, text).logit_scale.item() == 0.0


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_forward_gives_one_unit_vector_per_sample(inputs: AdaptorInputs) -> None:
    model = small_adaptor(inputs)

    output = model(features(inputs, 5, IMAGE_DIM, 7, seed=1), features(inputs, 5, TEXT_DIM, 4, seed=2))

    for embeds in (output.image_embeds, output.text_embeds):
        assert embeds.shape == (5, WIDTH)
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(5))


def test_block_with_one_key_per_sample_ignores_the_queries() -> None:
    torch.manual_seed(0)
    block = CrossAttentionBlock(WIDTH, num_heads=4, ffn_dim=32, dropout=0.1).eval()
    stream, other = torch.randn(3, 1, WIDTH), torch.randn(3, 1, WIDTH)
    stream_tokens, other_tokens = torch.randn(3, 5, WIDTH), torch.randn(3, 5, WIDTH)

    torch.testing.assert_close(block(stream, queries=other), block(stream))
    assert not torch.allclose(block(stream_tokens, queries=other_tokens), block(stream_tokens), atol=1e-4)


def test_block_rejects_queries_not_aligned_with_the_stream() -> None:
    block = CrossAttentionBlock(WIDTH, num_heads=4, ffn_dim=32, dropout=0.0)

    with pytest.raises(ValueError, match="same position"):
        block(torch.randn(2, 5, WIDTH), queries=torch.randn(2, 3, WIDTH))


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_each_embedding_depends_only_on_its_own_modality(inputs: AdaptorInputs) -> None:
    """No embedding sees its paired sample, so the contrastive loss offers no shortcut."""
    model = small_adaptor(inputs)
    image, text = features(inputs, 4, IMAGE_DIM, 5, seed=1), features(inputs, 4, TEXT_DIM, 3, seed=2)
    other_image, other_text = features(inputs, 4, IMAGE_DIM, 5, seed=3), features(inputs, 4, TEXT_DIM, 3, seed=4)

    output = model(image, text)

    torch.testing.assert_close(output.image_embeds, model.encode_image(image))
    torch.testing.assert_close(output.text_embeds, model.encode_text(text))
    torch.testing.assert_close(model(image, other_text).image_embeds, output.image_embeds)
    torch.testing.assert_close(model(other_image, text).text_embeds, output.text_embeds)


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
@pytest.mark.parametrize("modality", ["image", "text"])
def test_single_modality_embedding_does_not_depend_on_batch_mates(inputs: AdaptorInputs, modality: str) -> None:
    model = small_adaptor(inputs)
    encode, dim = (model.encode_image, IMAGE_DIM) if modality == "image" else (model.encode_text, TEXT_DIM)
    batch = features(inputs, 4, dim, 6, seed=1)
    other_mates = features(inputs, 4, dim, 6, seed=2)
    other_mates[0] = batch[0]
    mask = token_mask([4, 6, 2, 5], 6) if inputs is TOKENS else None
    other_mask = token_mask([4, 1, 6, 3], 6) if inputs is TOKENS else None

    alone = encode(batch[:1], None if mask is None else mask[:1])

    torch.testing.assert_close(encode(batch, mask)[:1], alone)
    torch.testing.assert_close(encode(other_mates, other_mask)[:1], alone)


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_forward_of_one_pair_matches_the_same_pair_in_a_larger_batch(inputs: AdaptorInputs) -> None:
    model = small_adaptor(inputs)
    image, text = features(inputs, 6, IMAGE_DIM, 5, seed=1), features(inputs, 6, TEXT_DIM, 3, seed=2)

    together = model(image, text)
    alone = model(image[2:3], text[2:3])

    torch.testing.assert_close(together.image_embeds[2:3], alone.image_embeds)
    torch.testing.assert_close(together.text_embeds[2:3], alone.text_embeds)


def test_token_mode_ignores_padded_tokens_but_not_real_ones() -> None:
    model = small_adaptor(TOKENS)
    image, text = features(TOKENS, 3, IMAGE_DIM, 6, seed=1), features(TOKENS, 3, TEXT_DIM, 5, seed=2)
    image_mask, text_mask = token_mask([6, 3, 1], 6), token_mask([2, 5, 4], 5)
    reference = model(image, text, image_mask, text_mask)

    noisy_image = torch.where(image_mask.unsqueeze(-1), image, 1e4 * torch.randn_like(image))
    noisy_text = torch.where(text_mask.unsqueeze(-1), text, torch.full_like(text, float("nan")))
    padded_changed = model(noisy_image, noisy_text, image_mask, text_mask)
    real_changed = image.clone()
    real_changed[1, 0] += 1.0

    torch.testing.assert_close(padded_changed.image_embeds, reference.image_embeds)
    torch.testing.assert_close(padded_changed.text_embeds, reference.text_embeds)
    torch.testing.assert_close(model.encode_image(noisy_image, image_mask), reference.image_embeds)
    changed = model(real_changed, text, image_mask, text_mask).image_embeds
    assert not torch.allclose(changed[1], reference.image_embeds[1], atol=1e-4)


def test_token_mode_embedding_does_not_depend_on_padding_length() -> None:
    model = small_adaptor(TOKENS)
    image = features(TOKENS, 2, IMAGE_DIM, 4, seed=1)
    mask = token_mask([4, 3], 4)
    padded = torch.cat([image, features(TOKENS, 2, IMAGE_DIM, 5, seed=2)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], dim=1)

    torch.testing.assert_close(model.encode_image(padded, padded_mask), model.encode_image(image, mask))


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_embeddings_do_not_depend_on_the_scale_of_backbone_features(inputs: AdaptorInputs) -> None:
    model = small_adaptor(inputs)
    image, text = features(inputs, 3, IMAGE_DIM, 4, seed=1), features(inputs, 3, TEXT_DIM, 5, seed=2)
    scales = torch.tensor([0.01, 3.0, 250.0]).view(3, *[1] * (image.dim() - 1))

    reference = model(image, text)
    rescaled = model(scales * image, scales * text)

    torch.testing.assert_close(rescaled.image_embeds, reference.image_embeds)
    torch.testing.assert_close(rescaled.text_embeds, reference.text_embeds)


def test_token_mode_rejects_a_sample_without_real_tokens() -> None:
    model = small_adaptor(TOKENS)

    with pytest.raises(ValueError, match=r"position\(s\) \[1\]"):
        model.encode_image(features(TOKENS, 2, IMAGE_DIM, 3, seed=1), token_mask([3, 0], 3))


@pytest.mark.parametrize(
    ("inputs", "image_shape", "message"),
    [(POOLED, (2, IMAGE_DIM + 1), "image_dim"), (POOLED, (2, 3, IMAGE_DIM), "inputs"),
     (TOKENS, (2, IMAGE_DIM), "inputs")],
)
def test_rejects_features_of_the_wrong_shape(inputs: AdaptorInputs, image_shape: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_adaptor(inputs).encode_image(torch.randn(image_shape))


def test_rejects_a_mask_in_pooled_mode() -> None:
    with pytest.raises(ValueError, match="tokens"):
        small_adaptor(POOLED).encode_image(torch.randn(2, IMAGE_DIM), torch.ones(2, 1, dtype=torch.bool))


def test_float16_cache_features_give_the_float32_result() -> None:
    model = small_adaptor(POOLED)
    image = features(POOLED, 3, IMAGE_DIM, 1, seed=1).half()

    torch.testing.assert_close(model.encode_image(image), model.encode_image(image.float()))


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_gradients_reach_only_the_adaptor(inputs: AdaptorInputs) -> None:
    model = small_adaptor(inputs).train()
    torch.manual_seed(5)
    image_backbone = nn.Linear(8, IMAGE_DIM).requires_grad_(False)
    text_backbone = nn.Linear(8, TEXT_DIM).requires_grad_(False)
    image = image_backbone(features(inputs, 4, 8, 5, seed=1))
    text = text_backbone(features(inputs, 4, 8, 3, seed=2))

    output = model(image, text)
    contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale).loss.backward()

    assert all(parameter.grad is None for parameter in image_backbone.parameters())
    assert all(parameter.grad is None for parameter in text_backbone.parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    in_projection = model.blocks[0].attention.in_proj_weight.grad
    query_and_key = in_projection[: 2 * WIDTH]
    value = in_projection[2 * WIDTH:]
    assert value.abs().sum() > 0
    if inputs is POOLED:
        assert torch.count_nonzero(query_and_key) == 0  # one key per sample: softmax is 1 whatever q and k
    else:
        assert query_and_key.abs().sum() > 0


@pytest.mark.parametrize("inputs", [POOLED, TOKENS])
def test_same_seed_gives_the_same_model_and_training_mode_output(inputs: AdaptorInputs) -> None:
    image, text = features(inputs, 4, IMAGE_DIM, 5, seed=1), features(inputs, 4, TEXT_DIM, 3, seed=2)

    def run(seed: int) -> torch.Tensor:
        model = small_adaptor(inputs, seed=seed).train()
        torch.manual_seed(seed)
        return model(image, text).image_embeds

    torch.testing.assert_close(run(7), run(7), rtol=0, atol=0)
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("inputs", [AdaptorInputs.POOLED, AdaptorInputs.TOKENS])
def test_per_token_image_embeddings_do_not_depend_on_batch_mates_and_respect_masks(inputs):
    """encode_image_tokens: one unit vector per real patch, zeros at padding, the same whatever else is in the batch;
    a padded token's value changes nothing."""
    torch.manual_seed(0)
    model = Adaptor(AdaptorConfig(image_dim=12, text_dim=10, projection_dim=16, num_heads=4, ffn_dim=32,
                                  inputs=inputs)).eval()
    tokens = torch.randn(4, 6, 12)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 4:] = False
    with torch.no_grad():
        together = model.encode_image_tokens(tokens, mask)
        alone = model.encode_image_tokens(tokens[:1], mask[:1])
        other_mates = model.encode_image_tokens(torch.cat([tokens[:1], torch.randn(5, 6, 12)]))
        changed_padding = tokens.clone()
        changed_padding[2, 4:] = 100.0
        padded = model.encode_image_tokens(changed_padding, mask)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together[0], other_mates[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded, together, atol=1e-5, rtol=0)
    assert together.shape == (4, 6, 16)
    assert torch.allclose(together[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-5)
    assert torch.count_nonzero(together[2, 4:]) == 0
    assert not torch.allclose(together[0, 0], together[0, 1])  # each patch keeps its own embedding


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_training_on_one_key_computes_the_attention_module_math_without_query_and_key(dropout: float) -> None:
    """The single-key shortcut gives nn.MultiheadAttention's training output from the same dropout draws,
    and an exact zero gradient to the query and key projections (only weight decay moves them)."""
    width = 16
    block = CrossAttentionBlock(width, num_heads=4, ffn_dim=32, dropout=dropout).train()
    stream, queries = torch.randn(8, 1, width), torch.randn(8, 1, width)

    torch.manual_seed(3)
    expected, _ = block.attention(queries, stream, stream, need_weights=False)
    torch.manual_seed(3)
    shortcut = block._single_key_attention(stream)
    block(stream, queries=queries).sum().backward()

    assert torch.allclose(shortcut, expected, atol=1e-6)
    assert torch.count_nonzero(block.attention.in_proj_weight.grad[:2 * width]) == 0
    assert torch.count_nonzero(block.attention.in_proj_bias.grad[:2 * width]) == 0
    assert torch.count_nonzero(block.attention.in_proj_weight.grad[2 * width:]) > 0
