"""Many pooled-input Adaptors of one shape as one model: parameters stacked along a leading point axis.

Sweep points that differ only in optimiser settings, loss weight, dropout or seed have parameter
tensors of the same shapes, so G of them run as grouped matrix products (`torch.baddbmm`, one
call for all G) instead of G separate models. Each point keeps exactly what it would have alone:

- its parameters: `StackedAdaptors` stacks G ordinary `Adaptor`s and then makes each model's
  parameters views of its slice of the stack, so the point's own optimiser, gradient clipping,
  checkpoints and validation work on the model as in a solo run, and see every update. Points
  may read text stores of different widths (one image store, several text encoders): a parameter
  whose shape differs between points (the text projection) is not stacked but stays each model's
  own tensor, and each point's text is projected by its own `F.linear`, as its solo run does;
- its dropout masks: a solo CPU run draws every mask from the global generator, in a fixed order
  (per layer the image block, then the text block; within a block the attention weights, the
  attention output, the FFN's hidden layer, the FFN output), one `bernoulli_` call per mask,
  scaled by ``1 / (1 - p)`` as `torch.nn.functional.dropout` does. Here each point draws the same
  masks in the same order from its own generator, which starts where the solo run's global
  generator stands after initialising the model, so the masks are the solo run's, bit for bit.

The arithmetic follows the solo training forward op for op (`CrossAttentionBlock` in training:
attention over a single key is ``out_proj`` of the dropped-out value). Batched products
(`_GroupedLinear`) run one GEMM per point, as `F.linear` does for one model, and layer norms run
per point (a batched affine sums its gradient in another order), so on this CPU each point's
forward and gradients equal its solo model's bit for bit; the tests hold whole runs to 1e-5.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptor_vlp.train.model import Adaptor, AdaptorConfig, AdaptorInputs

LAYER_NORM_EPS = 1e-5
"""nn.LayerNorm's default epsilon, which the Adaptor's blocks use."""


class StackMode(str, Enum):
    """How a stack computes its points' steps.

    EXACT: each point's own AdamW, layer norms and loss, one GEMM per point: every point's weights
    equal its solo run's bit for bit on the CPU. FAST: fused AdamW steps over the stacked
    parameters (`train.stacked_optimizer`), batched layer norms, loss and gradient norms: fewer,
    larger operations, each point near its solo run but not bit for bit, drifting further as it
    trains (AdamW scales rounding differences in small gradients up to update size): within 1e-5
    over the tests' short toy runs, 4e-5 after one epoch of the demo, 0.04 after 40 (BENCHMARKS.md).
    """

    EXACT = "exact"
    FAST = "fast"


class StackError(ValueError):
    """Adaptors or recipes that cannot share one stack: other shapes, other data, or token inputs."""


def stack_shape(config: AdaptorConfig) -> AdaptorConfig:
    """The part of a config that all points of a stack must share (dropout, temperature and text width may differ)."""
    return replace(config, text_dim=1, dropout=0.0, logit_scale_init=0.0)


@dataclass(frozen=True)
class StackedOutput:
    """Per point unit-norm embeddings (G, B, P) and clamped log logit scales (G,)."""

    image_embeds: Tensor
    text_embeds: Tensor
    logit_scale: Tensor


class StackedAdaptors:
    """G Adaptors of one shape with pooled inputs; `parameters[name]` is the (G, ...) stack of every point's tensor.

    Building the stack copies the models' current parameters once and then points each model's
    parameters at its slice, so a model and its slice are one tensor from then on. A parameter
    whose shape differs between points (the text projection, when the text stores' widths do)
    is left in its model: `own[name]` lists the points' tensors.
    """

    def __init__(self, models: Sequence[Adaptor], mode: StackMode = StackMode.EXACT) -> None:
        shapes = {stack_shape(model.config) for model in models}
        if len(shapes) != 1:
            raise StackError(f"Adaptors of {len(shapes)} different shapes cannot share a stack")
        self.shape = shapes.pop()
        if self.shape.inputs is not AdaptorInputs.POOLED:
            raise StackError("only pooled-input Adaptors stack; token inputs train one run at a time")
        self.mode = mode
        self.models = list(models)
        self.dropouts = [model.config.dropout for model in models]
        named = [dict(model.named_parameters()) for model in models]
        self.names = list(named[0])
        stacks = [name for name in self.names if len({values[name].shape for values in named}) == 1]
        self.parameters = {name: torch.stack([values[name].detach() for values in named]).requires_grad_()
                           for name in stacks}
        self.own = {name: [values[name] for values in named] for name in self.names if name not in self.parameters}
        for point, values in enumerate(named):
            for name in stacks:
                values[name].data = self.parameters[name].detach()[point]

    def __len__(self) -> int:
        return len(self.models)

    def zero_grad(self) -> None:
        """Drops the stack's and the models' gradients (as `optimizer.zero_grad(set_to_none=True)` does)."""
        for value in self.parameters.values():
            value.grad = None
        for model in self.models:
            for parameter in model.parameters():
                parameter.grad = None

    @torch.no_grad()
    def clip_gradients(self, max_norms: Sequence[float]) -> None:
        """Point g's gradients scaled as `clip_grad_norm_(model_g.parameters(), max_norms[g])` scales them.

        The same per-tensor norms, in the models' parameter order, their norm, and the clamped
        coefficient, for all points at once; in FAST mode each stacked tensor's G norms in one
        call (the same values, summed in another order).
        """
        if self.mode is StackMode.FAST:
            norms = [value.grad.reshape(len(self), -1).norm(dim=1) for value in self.parameters.values()]
            norms += [torch.stack([tensor.grad.norm() for tensor in tensors]) for tensors in self.own.values()]
            totals = torch.linalg.vector_norm(torch.stack(norms), dim=0)
        else:
            count = len(self.names)
            norms = torch._foreach_norm([self._gradient(name, point) for point in range(len(self))
                                         for name in self.names])
            totals = torch.stack([torch.linalg.vector_norm(torch.stack(norms[start:start + count]))
                                  for start in range(0, len(norms), count)])
        limits = torch.tensor(max_norms, dtype=totals.dtype, device=totals.device)
        coefficients = torch.clamp((totals + 1e-6).reciprocal() * limits, max=1.0)  # as `max_norm / tensor` computes
        for value in self.parameters.values():
            value.grad.mul_(coefficients.view(-1, *([1] * (value.dim() - 1))))
        for tensors in self.own.values():
            for tensor, coefficient in zip(tensors, coefficients.unbind()):
                tensor.grad.mul_(coefficient)

    def _gradient(self, name: str, point: int) -> Tensor:
        """Point `point`'s gradient of parameter `name` (after a backward pass)."""
        return self.parameters[name].grad[point] if name in self.parameters else self.own[name][point].grad

    def share_gradients(self) -> None:
        """After a backward pass: each model's parameter gradients become views of its slice of the stack's."""
        for point, model in enumerate(self.models):
            for name, parameter in model.named_parameters():
                if name in self.parameters:
                    parameter.grad = self.parameters[name].grad[point]

    def forward(self, image: Tensor, text: Tensor | Sequence[Tensor], generators: Sequence[torch.Generator]
                ) -> StackedOutput:
        """Point g's training-mode embeddings of its batch `image[g]` (B, image_dim) and `text[g]` (B, its text_dim).

        `text` is one (G, B, text_dim) tensor, or a (B, text_dim) tensor per point when their
        widths differ. Each point's dropout masks come from `generators[g]`, drawn as its solo run
        draws them.
        """
        masks = _MaskSource(self.dropouts, generators, image.device)
        image_stream = self._project("image_projection.weight", image)
        text_stream = self._project("text_projection.weight", text)
        for layer in range(self.shape.num_layers):
            value_projection = self._value_projection(layer)
            image_stream = self._block(layer, image_stream, value_projection, masks)
            text_stream = self._block(layer, text_stream, value_projection, masks)
        scale = self.parameters["logit_scale"].clamp(0.0, self.shape.logit_scale_max)
        return StackedOutput(F.normalize(image_stream, dim=-1), F.normalize(text_stream, dim=-1), scale)

    def _project(self, name: str, features: Tensor | Sequence[Tensor]) -> Tensor:
        """Unit-norm (G, B, P) projections: one grouped product, or each point's own where the widths differ."""
        if name in self.parameters:
            weight = self.parameters[name]
            features = features if isinstance(features, Tensor) else torch.stack(list(features))
            return F.normalize(_GroupedLinear.apply(features.to(weight.dtype), weight, None), dim=-1)
        return torch.stack([F.normalize(F.linear(point_features.to(weight.dtype), weight), dim=-1)
                            for point_features, weight in zip(features, self.own[name])])

    def _value_projection(self, layer: int) -> tuple[Tensor, Tensor]:
        """The value rows of layer `layer`'s packed query/key/value projection (weight, bias), sliced once per pass.

        Both modalities' blocks use them, so their gradients add up on the slice before one scatter into the
        packed tensor.
        """
        prefix = f"blocks.{layer}.attention."
        width = self.shape.projection_dim
        return (self.parameters[prefix + "in_proj_weight"][:, 2 * width:],
                self.parameters[prefix + "in_proj_bias"][:, 2 * width:])

    def _block(self, layer: int, stream: Tensor, value_projection: tuple[Tensor, Tensor], masks: _MaskSource) -> Tensor:
        """`CrossAttentionBlock` on a length-1 stream: the attention reduces to the value and output projections."""
        prefix = f"blocks.{layer}."
        width, heads = self.shape.projection_dim, self.shape.num_heads
        points, batch = stream.shape[:2]
        value = _GroupedLinear.apply(stream, *value_projection)
        attention_weights = masks.draw((batch, heads))
        if attention_weights is not None:
            value = (value.view(points, batch, heads, width // heads) * attention_weights.unsqueeze(-1)
                     ).view(points, batch, width)
        attended = self._linear(prefix + "attention.out_proj", value)
        hidden = self._norm(prefix + "attention_norm", stream + masks.apply(attended))
        inner = masks.apply(torch.relu(self._linear(prefix + "ffn.0", hidden)))
        return self._norm(prefix + "ffn_norm", hidden + masks.apply(self._linear(prefix + "ffn.3", inner)))

    def _linear(self, prefix: str, inputs: Tensor) -> Tensor:
        return _GroupedLinear.apply(inputs, self.parameters[prefix + ".weight"], self.parameters[prefix + ".bias"])

    def _norm(self, prefix: str, inputs: Tensor) -> Tensor:
        """Each point's layer norm: its own call (EXACT), or one normalisation and a batched affine (FAST)."""
        if self.mode is StackMode.FAST:
            normalised = F.layer_norm(inputs, inputs.shape[-1:], None, None, LAYER_NORM_EPS)
            return torch.addcmul(self.parameters[prefix + ".bias"].unsqueeze(1), normalised,
                                 self.parameters[prefix + ".weight"].unsqueeze(1))
        weights, biases = self.parameters[prefix + ".weight"].unbind(), self.parameters[prefix + ".bias"].unbind()
        return torch.stack([F.layer_norm(point_inputs, inputs.shape[-1:], weight, bias, LAYER_NORM_EPS)
                            for point_inputs, weight, bias in zip(inputs.unbind(), weights, biases)])


class _GroupedLinear(torch.autograd.Function):
    """Point g's `F.linear(inputs[g], weight[g], bias[g])` for every g: one batched GEMM forward, one per gradient back.

    Written out because autograd's own gradient of ``baddbmm(bias, inputs, weight.mT)`` reaches the
    weight transposed and pays a strided copy into the (G, out, in) layout on every step; here it is
    computed in that layout, as F.linear's backward computes it for one model.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: Any, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(inputs, weight.mT)
        return torch.baddbmm(bias.unsqueeze(1), inputs, weight.mT)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        inputs, weight = ctx.saved_tensors
        needs_inputs, needs_weight, needs_bias = ctx.needs_input_grad
        return (torch.bmm(grad, weight) if needs_inputs else None,
                torch.bmm(grad.mT, inputs) if needs_weight else None,
                grad.sum(1) if ctx.has_bias and needs_bias else None)


class _MaskSource:
    """Every point's dropout masks for one forward pass, drawn in the solo run's order from its own generator."""

    def __init__(self, rates: Sequence[float], generators: Sequence[torch.Generator], device: torch.device) -> None:
        self.rates = rates
        self.generators = generators
        self.active = any(rate > 0 for rate in rates)
        self.device = device

    def draw(self, shape: tuple[int, ...]) -> Tensor | None:
        """(G, *shape) masks, each point's scaled by 1 / (1 - p) like F.dropout's; None when no point drops out."""
        if not self.active:
            return None
        masks = []
        for rate, generator in zip(self.rates, self.generators):
            if rate > 0:
                noise = torch.empty(shape, device=self.device).bernoulli_(1 - rate, generator=generator)
                masks.append(noise.div_(1 - rate))
            else:
                masks.append(torch.ones(shape, device=self.device))
        return torch.stack(masks)

    def apply(self, inputs: Tensor) -> Tensor:
        """`inputs` (G, B, W) with each point's next dropout mask applied."""
        mask = self.draw(tuple(inputs.shape[1:]))
        return inputs if mask is None else inputs * mask
