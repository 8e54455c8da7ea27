"""StackedAdamW: one step over a stack moves every point as its own AdamW would, and keeps each AdamW's state."""
import dataclasses

import pytest
import torch

from adaptor_vlp.train.model import Adaptor, AdaptorConfig
from adaptor_vlp.train.stacked_model import StackedAdaptors, StackError, StackMode
from adaptor_vlp.train.stacked_optimizer import StackedAdamW

BASE = AdaptorConfig(image_dim=24, text_dim=20, projection_dim=16, num_layers=1, num_heads=4, ffn_dim=32)
SETTINGS = [dict(lr=1e-2, weight_decay=0.01), dict(lr=3e-3, weight_decay=0.1), dict(lr=1e-3, weight_decay=0.0)]
TEXT_DIMS = (20, 12, 20)
"""The second point reads a narrower text store: its text projection stays its own tensor."""


def models_and_optimizers(settings_of_points: list[dict] = SETTINGS
                          ) -> tuple[list[Adaptor], list[torch.optim.AdamW]]:
    models, optimizers = [], []
    for seed, (settings, text_dim) in enumerate(zip(settings_of_points, TEXT_DIMS)):
        torch.manual_seed(seed)
        model = Adaptor(dataclasses.replace(BASE, text_dim=text_dim))
        models.append(model)
        optimizers.append(torch.optim.AdamW(model.parameters(), foreach=True, **settings))
    return models, optimizers


def gradients(step: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(step)
    models, _ = models_and_optimizers()
    return [{name: torch.randn(parameter.shape, generator=generator) for name, parameter in model.named_parameters()}
            for model in models]


@pytest.mark.parametrize("settings_of_points", [SETTINGS, [SETTINGS[0]] * 3], ids=["own settings", "shared settings"])
def test_steps_move_every_point_as_its_own_adamw_and_its_state_is_that_adamws(settings_of_points: list[dict]) -> None:
    """Points of their own settings step one call each, over their slices; points of shared ones in one call."""
    solo_models, solo_optimizers = models_and_optimizers(settings_of_points)
    models, optimizers = models_and_optimizers(settings_of_points)
    for step in range(2):  # the stacked optimiser takes over from each AdamW's second step (a resumed state)
        for model, optimizer, grads in zip(solo_models + models, solo_optimizers + optimizers, gradients(step) * 2):
            for name, parameter in model.named_parameters():
                parameter.grad = grads[name].clone()
            optimizer.step()
    stack = StackedAdaptors(models, StackMode.FAST)
    stacked = StackedAdamW(stack, optimizers)

    for step in range(2, 5):
        for model, optimizer, grads in zip(solo_models, solo_optimizers, gradients(step)):
            for name, parameter in model.named_parameters():
                parameter.grad = grads[name].clone()
            optimizer.step()
        step_grads = gradients(step)
        for name, value in stack.parameters.items():
            value.grad = torch.stack([grads[name] for grads in step_grads])
        for name, tensors in stack.own.items():
            for tensor, grads in zip(tensors, step_grads):
                tensor.grad = grads[name].clone()
        stacked.step()

    assert "text_projection.weight" in stack.own
    for solo, model, solo_optimizer, optimizer in zip(solo_models, models, solo_optimizers, optimizers):
        for (name, expected), parameter in zip(solo.named_parameters(), model.parameters()):
            torch.testing.assert_close(parameter, expected, rtol=0, atol=1e-6, msg=name)
            state, solo_state = optimizer.state[parameter], solo_optimizer.state[expected]
            assert float(state["step"]) == float(solo_state["step"]) == 5.0
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state[key], solo_state[key], rtol=0, atol=1e-6, msg=f"{name} {key}")


def test_points_with_other_adamw_settings_or_amsgrad_are_refused() -> None:
    models, optimizers = models_and_optimizers()
    optimizers[1] = torch.optim.AdamW(models[1].parameters(), betas=(0.8, 0.99))

    with pytest.raises(StackError, match="AdamW settings differ"):
        StackedAdamW(StackedAdaptors(models, StackMode.FAST), optimizers)

    optimizers[1] = torch.optim.AdamW(models[1].parameters(), amsgrad=True)
    with pytest.raises(StackError, match="no amsgrad"):
        StackedAdamW(StackedAdaptors(models, StackMode.FAST), optimizers)
