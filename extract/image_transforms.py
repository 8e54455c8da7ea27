"""Turning a decoded grayscale radiograph into a backbone's normalised input tensor.

`preprocess` gives the one deterministic input per image; `augmented_view` gives seeded random
views (random resized crop + small rotation), each reproducible from (sample id, view index) so
that K views can be cached next to the plain embedding and recomputed identically on resume
(the published code froze a single random crop into its cache instead).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from adaptor_vlp.extract.backbones import BackboneSpec, ResizePolicy

RESIZE_INTERPOLATION = InterpolationMode.BICUBIC
ROTATION_INTERPOLATION = InterpolationMode.BILINEAR
GRAYSCALE_HANDLING = "replicated to 3 channels"


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
    """The (3, S, S) float32 input for `spec`: resized per its policy, normalised, gray to RGB."""
    image = _as_unit_tensor(gray)
    size = spec.image_size
    if spec.resize is ResizePolicy.SQUASH:
        image = F.resize(image, [size, size], interpolation=RESIZE_INTERPOLATION, antialias=True)
    else:
        image = F.resize(image, [size], interpolation=RESIZE_INTERPOLATION, antialias=True)
        image = F.center_crop(image, [size, size])
    return _normalise(image, spec)


def augmented_view(gray: np.ndarray, spec: BackboneSpec, seed: int) -> torch.Tensor:
    """A seeded random view of the image as a (3, S, S) float32 input for `spec`.

    The image is rotated by up to `VIEW_AUGMENTATION.max_rotation_degrees` (corners filled
    black), then a random crop of the drawn area fraction and aspect ratio is resized to S x S.
    The same seed always gives the same view.
    """
    augmentation = VIEW_AUGMENTATION
    draws = torch.rand(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    angle = (2 * draws[0] - 1) * augmentation.max_rotation_degrees
    image = F.rotate(_as_unit_tensor(gray), angle, interpolation=ROTATION_INTERPOLATION, fill=[0.0])
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
        image, top, left, crop_height, crop_width, [size, size], interpolation=RESIZE_INTERPOLATION, antialias=True
    )
    return _normalise(image, spec)


def view_seed(sample_id: str, view_index: int) -> int:
    """The seed of augmented view `view_index` of a sample: stable across runs and machines."""
    digest = hashlib.sha256(f"{sample_id}\x00{view_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_preprocessing(spec: BackboneSpec) -> dict:
    """Everything in the image path that changes the embedding, as a JSON-able record."""
    return {
        "image_size": spec.image_size,
        "resize": spec.resize.value,
        "interpolation": RESIZE_INTERPOLATION.value,
        "grayscale": GRAYSCALE_HANDLING,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "view_augmentation": asdict(VIEW_AUGMENTATION),
    }


def _as_unit_tensor(gray: np.ndarray) -> torch.Tensor:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) grayscale image, got {gray.dtype} of shape {gray.shape}")
    return torch.from_numpy(gray.astype(np.float32)).div_(255.0).unsqueeze(0)


def _normalise(image: torch.Tensor, spec: BackboneSpec) -> torch.Tensor:
    rgb = image.clamp(0.0, 1.0).expand(3, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return ((rgb - mean) / std).contiguous()


def _between(low: float, high: float, fraction: float) -> float:
    return low + fraction * (high - low)
