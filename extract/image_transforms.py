"""Turning a decoded grayscale radiograph into a backbone's input tensor.

`preprocess(gray, spec)` is a pure function of the decoded 8-bit image and the backbone's
`ImagePreprocessing`: its geometric steps run on grey levels (0..255), then the image is
scaled to 0..1, replicated to the backbone's channels and normalised. So one decoded image can
feed several backbones, and everything that shapes the input is in the spec (and hence in the
store's provenance). `augmented_view` gives seeded random views (random resized crop + small
rotation), each reproducible from (sample id, view index), so that K views can be cached next
to the plain embedding and recomputed identically on resume (the published code froze a single
random crop into its cache instead).

Area interpolation is implemented here rather than borrowed: torch's `area` mode averages
whole pixels per bin and Pillow's BOX filter weighs pixels 0 or 1 by their centres, while
OpenCV's INTER_AREA (what the paper's code used) weighs each input pixel by the fraction of it
an output pixel covers. `area_resize` computes exactly those fractional coverages.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as torch_functional
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from adaptor_vlp.cache_schema.geometry import centre_square, resized_shape, square_padding
from adaptor_vlp.extract.backbone_spec import (
    RESIZE_OPS, BackboneSpec, ImagePreprocessing, ImageStep, Interpolation, StepOp,
)

MAX_GREY = 255.0
VIEW_INTERPOLATION = InterpolationMode.BICUBIC
ROTATION_INTERPOLATION = InterpolationMode.BILINEAR
TORCHVISION_INTERPOLATION = {Interpolation.BICUBIC: InterpolationMode.BICUBIC,
                             Interpolation.BILINEAR: InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class ViewAugmentation:
    """The ranges augmented views are drawn from."""

    min_area_fraction: float = 0.6
    max_area_fraction: float = 1.0
    min_aspect_ratio: float = 3 / 4
    max_aspect_ratio: float = 4 / 3
    max_rotation_degrees: float = 10.0


VIEW_AUGMENTATION = ViewAugmentation()


def preprocess(gray: np.ndarray, spec: BackboneSpec) -> torch.Tensor:
    """The (C, S, S) float32 input for `spec`: its image steps, then scaling, channels and normalisation."""
    image = _grey_levels(gray)
    for step in spec.image.steps:
        image = apply_step(image, step)
    return _normalise(image.div(MAX_GREY), spec.image)


def apply_step(image: torch.Tensor, step: ImageStep) -> torch.Tensor:
    """One geometric step on a (1, H, W) float32 image of grey levels (sizes and windows: `cache_schema.geometry`)."""
    height, width = image.shape[-2:]
    if step.op in RESIZE_OPS:
        return _resize(image, step, *resized_shape(step.op.value, step.size, height, width))
    if step.op is StepOp.PAD_SQUARE:
        top, bottom, left, right = square_padding(height, width)
        return torch_functional.pad(image, (left, right, top, bottom), value=0.0)
    if step.op is StepOp.CROP_SQUARE:
        top, left, side = centre_square(height, width)
        return image[:, top:top + side, left:left + side]
    return F.center_crop(image, [step.size, step.size])


def area_resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resizes a (..., H, W) image so each output pixel is the area-weighted mean of what it covers.

    Separable: along each axis an output pixel i covers the input interval [i*s, (i+1)*s)
    (s = input / output length); the integral of the piecewise-constant input over that
    interval is read off its cumulative sum, interpolated linearly inside the pixel it ends in.
    This is OpenCV's INTER_AREA for shrinking and for enlarging both axes.
    """
    rows = _area_along(image.to(torch.float64), height, axis=-2)
    return _area_along(rows, width, axis=-1).to(image.dtype)


def decode_size(spec: BackboneSpec) -> int | None:
    """The shorter side an image may be decoded at before `preprocess` without changing its result.

    None (full resolution) for backbones whose first resize averages areas: the paper's steps
    average the original pixels, so decoding at a reduced scale first would change them.
    Otherwise the first resize step's size, which it then reaches from at least that size.
    """
    first_resize = next((step for step in spec.image.steps if step.interpolation is not None), None)
    if first_resize is None or first_resize.interpolation is Interpolation.AREA:
        return None
    return first_resize.size


def augmented_view(gray: np.ndarray, spec: BackboneSpec, seed: int) -> torch.Tensor:
    """A seeded random view of the image as a (C, S, S) float32 input for `spec`.

    The image is rotated by up to `VIEW_AUGMENTATION.max_rotation_degrees` (corners filled
    black), then a random crop of the drawn area fraction and aspect ratio is resized to S x S.
    The same seed always gives the same view.
    """
    augmentation = VIEW_AUGMENTATION
    draws = torch.rand(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    angle = (2 * draws[0] - 1) * augmentation.max_rotation_degrees
    image = F.rotate(_grey_levels(gray).div(MAX_GREY), angle, interpolation=ROTATION_INTERPOLATION, fill=[0.0])
    height, width = image.shape[-2:]
    area = height * width * _between(augmentation.min_area_fraction, augmentation.max_area_fraction, draws[1])
    log_aspect = _between(math.log(augmentation.min_aspect_ratio), math.log(augmentation.max_aspect_ratio), draws[2])
    aspect = math.exp(log_aspect)
    crop_width = min(width, max(1, round(math.sqrt(area * aspect))))
    crop_height = min(height, max(1, round(math.sqrt(area / aspect))))
    top = int(draws[3] * (height - crop_height + 1))
    left = int(draws[4] * (width - crop_width + 1))
    size = spec.image_size
    image = F.resized_crop(
        image, top, left, crop_height, crop_width, [size, size], interpolation=VIEW_INTERPOLATION, antialias=True
    )
    return _normalise(image, spec.image)


def view_seed(sample_id: str, view_index: int) -> int:
    """The seed of augmented view `view_index` of a sample: stable across runs and machines."""
    digest = hashlib.sha256(f"{sample_id}\x00{view_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_preprocessing(spec: BackboneSpec) -> dict:
    """Everything in the image path that changes the embedding, as a JSON-able record."""
    return {
        **spec.image.record(),
        "view_augmentation": {**asdict(VIEW_AUGMENTATION), "interpolation": VIEW_INTERPOLATION.value},
    }


def _grey_levels(gray: np.ndarray) -> torch.Tensor:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) grayscale image, got {gray.dtype} of shape {gray.shape}")
    return torch.from_numpy(gray.astype(np.float32)).unsqueeze(0)


def _resize(image: torch.Tensor, step: ImageStep, height: int, width: int) -> torch.Tensor:
    if step.interpolation is Interpolation.AREA:
        resized = area_resize(image, height, width)
    else:
        resized = F.resize(image, [height, width], interpolation=TORCHVISION_INTERPOLATION[step.interpolation],
                           antialias=True).clamp_(0.0, MAX_GREY)
    return resized.round_() if step.rounded else resized


def _area_along(image: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    length = image.shape[axis]
    if length == size:
        return image
    moved = image.movedim(axis, -1)
    integral = torch_functional.pad(moved.cumsum(dim=-1), (1, 0))  # integral[k] = sum of pixels [0, k)
    edges = torch.arange(size + 1, dtype=torch.float64) * (length / size)
    whole = edges.floor().clamp_(max=length - 1).long()
    fraction = (edges - whole).unsqueeze(0)
    at_edges = integral[..., whole] + fraction * moved[..., whole]  # integral up to each (fractional) edge
    averages = (at_edges[..., 1:] - at_edges[..., :-1]) * (size / length)
    return averages.movedim(-1, axis)


def _normalise(image: torch.Tensor, preprocessing: ImagePreprocessing) -> torch.Tensor:
    channels = image.clamp(0.0, 1.0).expand(preprocessing.channels, -1, -1)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(-1, 1, 1)
    return ((channels - mean) / std).contiguous()


def _between(low: float, high: float, fraction: float) -> float:
    return low + fraction * (high - low)
