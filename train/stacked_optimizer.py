"""One AdamW step for every point of a stack (the fast form of `train.stacked`), its state kept in each point's AdamW.

A stack's exact form steps each point's own `torch.optim.AdamW` over its slice: per point a few
multi-tensor calls over ~20 small tensors. `StackedAdamW` runs the same update once over the
stacked (G, ...) tensors, with each point's learning rate (its schedule's current value), weight
decay and step count as (G,) tensors broadcast along the point axis. The arithmetic is AdamW's
(decoupled weight decay, bias-corrected moments, as torch's multi-tensor AdamW computes it), but
the per-point scalars are tensors rather than Python floats, so a point lands within float
rounding of its own AdamW's step, not bit for bit.

The moments live in (G, ...) tensors whose slices are the points' own optimiser state
(`optimizer.state[parameter]["exp_avg"]` is a view of its slice, and `"step"` counts along), so
each point's checkpoint records, and a resume restores, exactly what its AdamW would hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from adaptor_vlp.train.stacked_model import StackedAdaptors, StackError

MOMENTS = ("exp_avg", "exp_avg_sq")
"""The per-parameter AdamW state besides the step count."""


@dataclass(frozen=True)
class _Entry:
    """One tensor the step updates: a stacked (G, ...) parameter, or one point's own parameter (`point` set)."""

    parameter: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    point: int | None

    def per_point(self, values: Tensor) -> Tensor:
        """(G,) per-point values shaped to broadcast over this tensor."""
        if self.point is not None:
            return values[self.point]
        return values.view(-1, *([1] * (self.parameter.dim() - 1)))


class StackedAdamW:
    """Steps every point's parameters as its `torch.optim.AdamW` would, in one multi-tensor update.

    `optimizers[g]` is point g's AdamW over `stack.models[g]`'s parameters (one parameter group,
    in the model's order); its learning rate is read from it at each step, so each point's
    scheduler drives it as before. `steps[g]` is point g's step count (its parameters' "step"
    states count along). Build a new one whenever the stack is rebuilt.
    """

    def __init__(self, stack: StackedAdaptors, optimizers: Sequence[torch.optim.AdamW]) -> None:
        if len(optimizers) != len(stack):
            raise ValueError(f"one optimiser per point: {len(optimizers)} for {len(stack)} points")
        settings = {_settings(optimizer) for optimizer in optimizers}
        if len(settings) != 1:
            raise StackError(f"the points' AdamW settings differ ({sorted(settings)}); they cannot share one step")
        self.betas, self.eps = settings.pop()
        self.optimizers = list(optimizers)
        self._groups = [optimizer.param_groups[0] for optimizer in optimizers]
        parameters = [list(model.parameters()) for model in stack.models]
        device = next(iter(stack.parameters.values())).device
        self.steps = torch.tensor([_step_of(optimizer, point_parameters)
                                   for optimizer, point_parameters in zip(optimizers, parameters)],
                                  dtype=torch.float32, device=device)
        self._entries: list[_Entry] = []
        moments: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        for index, name in enumerate(stack.names):
            if name in stack.parameters:
                exp_avg, exp_avg_sq = (torch.stack([_moment(optimizer, point_parameters[index], key)
                                                    for optimizer, point_parameters in zip(optimizers, parameters)])
                                       for key in MOMENTS)
                self._entries.append(_Entry(stack.parameters[name], exp_avg, exp_avg_sq, point=None))
                moments.update({(index, point): (exp_avg[point], exp_avg_sq[point]) for point in range(len(stack))})
            else:
                for point, (optimizer, tensor) in enumerate(zip(optimizers, stack.own[name])):
                    exp_avg, exp_avg_sq = (_moment(optimizer, tensor, key) for key in MOMENTS)
                    self._entries.append(_Entry(tensor, exp_avg, exp_avg_sq, point=point))
                    moments[index, point] = exp_avg, exp_avg_sq
        self._counters: list[Tensor] = []
        for point, (optimizer, point_parameters) in enumerate(zip(optimizers, parameters)):
            for index, parameter in enumerate(point_parameters):
                exp_avg, exp_avg_sq = moments[index, point]
                counter = self.steps[point].clone()
                optimizer.state[parameter] = {"step": counter, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
                self._counters.append(counter)

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step of every point, at its optimiser's current learning rate and weight decay."""
        beta1, beta2 = self.betas
        device = self.steps.device
        lrs = torch.tensor([group["lr"] for group in self._groups], dtype=torch.float64)
        decays = torch.tensor([group["weight_decay"] for group in self._groups], dtype=torch.float64)
        self.steps.add_(1)
        torch._foreach_add_(self._counters, 1.0)
        steps = self.steps.to(torch.float64).cpu()
        keep = (1 - lrs * decays).to(device, torch.float32)
        step_sizes = (-lrs / (1 - beta1 ** steps)).to(device, torch.float32)
        corrections = (1 - beta2 ** steps).sqrt().to(device, torch.float32)
        entries = self._entries
        parameters = [entry.parameter for entry in entries]
        exp_avgs = [entry.exp_avg for entry in entries]
        exp_avg_sqs = [entry.exp_avg_sq for entry in entries]
        gradients = [entry.parameter.grad for entry in entries]
        torch._foreach_mul_(parameters, [entry.per_point(keep) for entry in entries])
        torch._foreach_lerp_(exp_avgs, gradients, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, gradients, gradients, 1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, [entry.per_point(corrections) for entry in entries])
        torch._foreach_add_(denominators, self.eps)
        updates = torch._foreach_div(exp_avgs, denominators)
        torch._foreach_mul_(updates, [entry.per_point(step_sizes) for entry in entries])
        torch._foreach_add_(parameters, updates)


def _settings(optimizer: torch.optim.AdamW) -> tuple[tuple[float, float], float]:
    """The AdamW settings all points must share (betas, eps); refuses what the stacked step does not compute."""
    if len(optimizer.param_groups) != 1:
        raise StackError("a stacked AdamW step needs one parameter group per point")
    group = optimizer.param_groups[0]
    if group["amsgrad"] or group["maximize"]:
        raise StackError("a stacked AdamW step computes plain AdamW (no amsgrad, no maximize)")
    return tuple(group["betas"]), group["eps"]


def _step_of(optimizer: torch.optim.AdamW, parameters: Sequence[Tensor]) -> float:
    """The point's AdamW step count (0 before its first step); all its parameters have stepped together."""
    counts = {float(optimizer.state[parameter]["step"]) for parameter in parameters if parameter in optimizer.state}
    if len(counts) > 1:
        raise StackError(f"a point's parameters stand at different AdamW steps {sorted(counts)}")
    return counts.pop() if counts else 0.0


def _moment(optimizer: torch.optim.AdamW, parameter: Tensor, key: str) -> Tensor:
    """The parameter's AdamW moment `key` (zeros before its first step), detached from the optimiser's state."""
    state = optimizer.state.get(parameter)
    if state is None or key not in state:
        return torch.zeros_like(parameter, memory_format=torch.preserve_format)
    return state[key].detach().clone()
