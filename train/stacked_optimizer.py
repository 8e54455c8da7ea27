"""One AdamW step for every point of a stack (the fast form of `train.stacked`), its state kept in each point's AdamW.

A stack's exact form steps each point's own `torch.optim.AdamW` (multi-tensor form, the solo
run's) over its slice: per point about ten passes over its parameters, each allocating its
temporaries. `StackedAdamW` runs torch's fused AdamW kernel instead, one pass per element and no
temporaries: points that share learning rate (their schedule's current value), weight decay and
step count, as every point of a study's stack of text encoders does, in one call over the whole
stacked (G, ...) tensors; points that differ (a learning-rate sweep), one call each over their
slices. The fused kernel computes AdamW's update (decoupled weight decay, bias-corrected moments)
in another order than the multi-tensor form, so a point lands within float rounding of its solo
run's step, not bit for bit.

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


class StackedAdamW:
    """Steps every point's parameters as its `torch.optim.AdamW` would, in fused calls over the stack.

    `optimizers[g]` is point g's AdamW over `stack.models[g]`'s parameters (one parameter group,
    in the model's order); its learning rate and weight decay are read from it at each step, so
    each point's scheduler drives it as before. `steps[g]` is point g's step count (its
    parameters' "step" states count along). Build a new one whenever the stack is rebuilt.
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
        self.device = next(iter(stack.parameters.values())).device
        self.steps = [_step_of(optimizer, point_parameters)
                      for optimizer, point_parameters in zip(optimizers, parameters)]
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
                counter = torch.tensor(self.steps[point], dtype=torch.float32, device=self.device)
                optimizer.state[parameter] = {"step": counter, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
                self._counters.append(counter)

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step of every point, at its optimiser's current learning rate and weight decay.

        Points that share learning rate, weight decay and step count (every point of a study's stack
        of text encoders) step in one fused AdamW call over the stacked tensors; points that differ
        (a learning-rate sweep) in one call each, over their slices.
        """
        beta1, beta2 = self.betas
        self.steps = [step + 1 for step in self.steps]
        torch._foreach_add_(self._counters, 1.0)
        points_of: dict[tuple[float, float, float], list[int]] = {}
        for point, (group, step) in enumerate(zip(self._groups, self.steps)):
            points_of.setdefault((group["lr"], group["weight_decay"], step), []).append(point)
        for (lr, weight_decay, step), points in points_of.items():
            parameters, gradients, exp_avgs, exp_avg_sqs = self._tensors(points)
            count = torch.tensor(step, dtype=torch.float32, device=self.device)
            torch._fused_adamw_(parameters, gradients, exp_avgs, exp_avg_sqs, [], [count] * len(parameters),
                                amsgrad=False, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                                eps=self.eps, maximize=False)

    def _tensors(self, points: Sequence[int]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """The parameters, gradients and moments of `points`: whole stacked tensors when they are every point,
        else their slices."""
        every = len(points) == len(self.steps)
        chosen: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for entry in self._entries:
            whole = (entry.parameter.detach(), entry.parameter.grad, entry.exp_avg, entry.exp_avg_sq)
            if entry.point is not None:
                chosen += [whole] if entry.point in points else []
            elif every:
                chosen.append(whole)
            else:
                chosen += [tuple(tensor[point] for tensor in whole) for point in points]
        parameters, gradients, exp_avgs, exp_avg_sqs = (list(tensors) for tensors in zip(*chosen))
        return parameters, gradients, exp_avgs, exp_avg_sqs


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
