"""StackedAdaptors: each point computes what its own Adaptor does, with the same dropout draws, gradients, clipping."""
import dataclasses

import pytest
import torch

from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, AdaptorConfig, AdaptorInputs
from adaptor_vlp.train.stacked_model import StackedAdaptors, StackError

BASE = AdaptorConfig(image_dim=24, text_dim=20, projection_dim=16, num_layers=2, num_heads=4, ffn_dim=32)
DROPOUTS = (0.1, 0.0, 0.4)
SEEDS = (42, 7, 42)
BATCH = 6


def solo_models() -> tuple[list[Adaptor], list[torch.Generator]]:
    """Each point's Adaptor initialised as a solo run does, and a generator where that run's global one then stands."""
    models, generators = [], []
    for dropout, seed in zip(DROPOUTS, SEEDS):
        torch.manual_seed(seed)
        models.append(Adaptor(dataclasses.replace(BASE, dropout=dropout)).train())
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        generators.append(generator)
    return models, generators


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(len(DROPOUTS), BATCH, BASE.image_dim, generator=generator),
            torch.randn(len(DROPOUTS), BATCH, BASE.text_dim, generator=generator))


def test_each_point_gets_its_solo_models_embeddings_and_gradients() -> None:
    image, text = batches()
    expected = []
    for point, (model, generator) in enumerate(zip(*solo_models())):
        torch.set_rng_state(generator.get_state())
        output = model(image[point], text[point])
        contrastive_loss(output.image_embeds, output.text_embeds, output.logit_scale).loss.backward()
        expected.append((output.image_embeds.detach(), output.text_embeds.detach(),
                         {name: parameter.grad for name, parameter in model.named_parameters()}))
    models, generators = solo_models()
    stack = StackedAdaptors(models)

    output = stack.forward(image, text, generators)
    sum(contrastive_loss(*parts).loss for parts in zip(output.image_embeds, output.text_embeds,
                                                        output.logit_scale)).backward()
    stack.share_gradients()

    for point, (image_embeds, text_embeds, grads) in enumerate(expected):
        torch.testing.assert_close(output.image_embeds[point], image_embeds, rtol=0, atol=1e-6)
        torch.testing.assert_close(output.text_embeds[point], text_embeds, rtol=0, atol=1e-6)
        for name, parameter in models[point].named_parameters():
            torch.testing.assert_close(parameter.grad, grads[name], rtol=0, atol=1e-6, msg=name)


def test_models_share_their_slice_of_the_stack() -> None:
    models, _ = solo_models()
    stack = StackedAdaptors(models)

    with torch.no_grad():
        models[1].logit_scale.add_(1.0)
        stack.parameters["image_projection.weight"][2].zero_()

    assert stack.parameters["logit_scale"][1] == models[1].logit_scale
    assert torch.count_nonzero(models[2].image_projection.weight) == 0


def test_clipping_scales_each_points_gradients_as_clip_grad_norm_does() -> None:
    models, _ = solo_models()
    stack = StackedAdaptors(models)
    for value in stack.parameters.values():
        value.grad = torch.randn_like(value)
    expected = []
    for point, limit in enumerate((0.5, 1e6, 2.0)):
        grads = [value.grad[point].clone() for value in stack.parameters.values()]
        copies = [torch.nn.Parameter(grad.clone()) for grad in grads]
        for copy, grad in zip(copies, grads):
            copy.grad = grad
        torch.nn.utils.clip_grad_norm_(copies, limit)
        expected.append([copy.grad for copy in copies])

    stack.clip_gradients([0.5, 1e6, 2.0])

    for point, grads in enumerate(expected):
        for value, grad in zip(stack.parameters.values(), grads):
            assert torch.equal(value.grad[point], grad)


@pytest.mark.parametrize(("change", "message"), [
    ({"ffn_dim": 64}, "2 different shapes"),
    ({"inputs": AdaptorInputs.TOKENS}, "only pooled-input"),
])
def test_adaptors_of_other_shapes_or_token_inputs_do_not_stack(change: dict, message: str) -> None:
    other = dataclasses.replace(BASE, **change)
    models = [Adaptor(other), Adaptor(other)] if "inputs" in change else [Adaptor(BASE), Adaptor(other)]

    with pytest.raises(StackError, match=message):
        StackedAdaptors(models)
