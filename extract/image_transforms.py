"""Turning a decoded grayscale radiograph into a backbone's input tensor.

`preprocess(gray, spec)` is a pure function of the decoded 8-bit image and the backbone's
`ImagePreprocessing`: its geometric steps run on grey levels (0..255), then the image is
scaled to 0..1, replicated to the backbone's channels and normalised. So one decoded image can
feed several backbones (`preprocess_each` runs the steps they share once), and everything that
shapes the input is in the spec (and hence in the store's provenance). How large the image is
decoded before those steps is a `DecodeSize`, chosen per run and recorded in the store too.
`augmented_view` gives seeded random views (random resized crop + small rotation), each
reproducible from (sample id, view index), so that K views can be cached next to the plain
embedding and recomputed identically on resume (the published code froze a single random crop
into its cache instead).

Area interpolation is implemented here rather than borrowed: torch's `area` mode averages
whole pixels per bin and Pillow's BOX filter weighs pixels 0 or 1 by their centres, while
OpenCV's INTER_AREA (what the paper's code used) weighs each input pixel by the fraction of it
an output pixel covers. `area_resize` computes exactly those fractional coverages.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as torch_functional
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from adaptor_vlp.cache_schema.geometry import centre_square, resized_shape, square_padding
from adaptor_vlp.cache_schema.warps import view_seed as view_seed  # shared with the segmentation views
from adaptor_vlp.extract.backbone_spec import (
    RESIZE_OPS,
    BackboneSpec,
    ImagePreprocessing,
    ImageStep,
    Interpolation,
    StepOp,
)

MAX_GREY = 255.0
VIEW_INTERPOLATION = InterpolationMode.BICUBIC
ROTATION_INTERPOLATION = InterpolationMode.BILINEAR
TORCHVISION_INTERPOLATION = {Interpolation.BICUBIC: InterpolationMode.BICUBIC,
                             Interpolation.BILINEAR: InterpolationMode.BILINEAR,
                             Interpolation.OPENCV_LINEAR: InterpolationMode.BILINEAR}
ORIGINAL_PIXEL_INTERPOLATIONS = (Interpolation.AREA, Interpolation.OPENCV_LINEAR)
"""First resizes that must read the decoded pixels themselves: a reduced decode would average them first."""


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
    return preprocess_each(gray, [spec])[0]


def preprocess_each(gray: np.ndarray, specs: Sequence[BackboneSpec],
                    frame: tuple[int, int] | None = None) -> list[torch.Tensor]:
    """`preprocess(gray, spec)` for each spec, running the leading steps that specs share only once.

    The paper's three image backbones all begin with the area resize of the full-resolution
    radiograph to 256 and the square padding, the costly part; each result is the same tensor
    `preprocess` gives for that spec alone (steps never modify their input). `frame`: the
    full-resolution (height, width) a reduced decode stands for; each spec's first resize then
    takes its output shape from that frame (`frame_of`), as it would from a full decode, instead
    of from the reduced image, whose sides are rounded at its own size.
    """
    done: dict[tuple[ImageStep, ...], torch.Tensor] = {(): _grey_levels(gray)}
    inputs = []
    for spec in specs:
        steps = spec.image.steps
        shared = max(k for k in range(len(steps) + 1) if steps[:k] in done)
        image = done[steps[:shared]]
        for k in range(shared, len(steps)):
            image = done[steps[:k + 1]] = apply_step(image, steps[k], whole_levels=_keeps_whole_levels(steps[:k]),
                                                     frame=frame_of(steps[:k], frame))
        inputs.append(_normalise(image.div(MAX_GREY), spec.image))
    return inputs


def frame_of(steps: Sequence[ImageStep], frame: tuple[int, int] | None) -> tuple[int, int] | None:
    """The full-resolution frame after `steps`: scale-free steps square it; a resize makes it the image's own (None)."""
    for step in steps:
        if frame is None or step.op not in SCALE_FREE_OPS:
            return None
        frame = (max(frame),) * 2 if step.op is StepOp.PAD_SQUARE else (min(frame),) * 2
    return frame


def apply_step(image: torch.Tensor, step: ImageStep, whole_levels: bool = False,
               frame: tuple[int, int] | None = None) -> torch.Tensor:
    """One geometric step on a (1, H, W) float32 image of grey levels (sizes and windows: `cache_schema.geometry`).

    `whole_levels`: the image holds whole grey levels (see `area_resize`). `frame`: the
    full-resolution (height, width) the image stands for; a resize takes its output shape from it.
    """
    height, width = image.shape[-2:]
    if step.op in RESIZE_OPS:
        return _resize(image, step, *resized_shape(step.op.value, step.size, *(frame or (height, width))),
                       whole_levels)
    if step.op is StepOp.PAD_SQUARE:
        top, bottom, left, right = square_padding(height, width)
        return torch_functional.pad(image, (left, right, top, bottom), value=0.0)
    if step.op is StepOp.CROP_SQUARE:
        top, left, side = centre_square(height, width)
        return image[:, top:top + side, left:left + side]
    return F.center_crop(image, [step.size, step.size])


def area_resize(image: torch.Tensor, height: int, width: int, whole_levels: bool = False) -> torch.Tensor:
    """Resizes a (..., H, W) image so each output pixel is the area-weighted mean of what it covers.

    Separable: along each axis an output pixel i covers the input interval [i*s, (i+1)*s)
    (s = input / output length); the integral of the piecewise-constant input over that
    interval is read off its cumulative sum, interpolated linearly inside the pixel it ends in.
    This is OpenCV's INTER_AREA for shrinking and for enlarging both axes. The arithmetic is
    float64 whatever the input's dtype. `whole_levels` vouches that the image holds whole grey
    levels (0..255), which lets the first axis sum blocks instead of a full cumulative sum: the
    same bits, several times faster at full resolution.
    """
    rows = _area_along(image, height, axis=-2, whole_levels=whole_levels)
    unchanged = image.shape[-2] == height
    return _area_along(rows, width, axis=-1, whole_levels=whole_levels and unchanged).to(image.dtype)


SCALE_FREE_OPS = (StepOp.PAD_SQUARE, StepOp.CROP_SQUARE)
"""Steps whose result scales with the image: they may come before the resize a reduced decode feeds."""


@dataclass(frozen=True)
class DecodeSize:
    """How large an image is decoded before the backbones' steps: full resolution, or its shorter side at `pixels`.

    A reduced size decodes a JPEG at the coarsest DCT scale that keeps the shorter side at least
    `pixels`, then resizes it to exactly `pixels` (bicubic), as `extract.images.read_grayscale`
    does for other formats after a full decode. It is recorded in the store
    (`preprocessing.decode_size`), since the backbone's steps then start from other pixels.
    """

    pixels: int | None = None
    """None: full resolution."""

    FULL_NAME = "full"

    def __post_init__(self) -> None:
        if self.pixels is not None and self.pixels < 1:
            raise ValueError(f"a decode size is a positive number of pixels or {self.FULL_NAME!r}, got {self.pixels}")

    @classmethod
    def parse(cls, text: str) -> DecodeSize:
        """'full' or a positive number of pixels (the shorter side)."""
        if text == cls.FULL_NAME:
            return cls(None)
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"decode size {text!r}: give {cls.FULL_NAME!r} or the shorter side in pixels, e.g. 256")
        return cls(int(text))

    def record(self) -> int | str:
        """The value a store records: 'full' or the shorter side in pixels."""
        return self.FULL_NAME if self.pixels is None else self.pixels

    def covers(self, pixels: int | None) -> bool:
        """True when this size is at least `pixels` (None: full resolution, which only full covers)."""
        return self.pixels is None or (pixels is not None and self.pixels >= pixels)

    def __str__(self) -> str:
        return "full resolution" if self.pixels is None else f"{self.pixels} px (shorter side)"


class DecodeSizeTooSmall(ValueError):
    """A decode size below what a backbone's steps start from: they would enlarge, or crop another field of view."""


def decode_size(spec: BackboneSpec) -> int | None:
    """The shorter side a backbone decodes at by default (`--decode-size auto`), or None for full resolution.

    The registry's measured `decode_size` where it states one (the paper's DINOv2 entries: 512,
    faithful to a full decode by `bench.decode_fidelity`). Else None (full resolution) for
    backbones whose first resize averages areas: their steps average the original pixels, so a
    reduced decode changes them (measured for ResNet-AE: below the bound at every reduced size).
    None too where no reduced decode gives the same field of view (`least_decode_size`).
    Otherwise the first resize step's size, which it then reaches from at least that size.
    """
    if spec.image.decode_size is not None:
        return spec.image.decode_size
    first_resize = next((step for step in spec.image.steps if step.interpolation is not None), None)
    if first_resize is not None and first_resize.interpolation in ORIGINAL_PIXEL_INTERPOLATIONS:
        return None
    return least_decode_size(spec)


def least_decode_size(spec: BackboneSpec) -> int | None:
    """The smallest shorter side a backbone's steps can start from, or None when only full resolution will do.

    That is the first resize's size, when only scale-free steps come before it (a reduced decode
    then only changes how the resize's pixels are sampled); with a crop of fixed size before any
    resize, or no resize at all, a reduced decode would show the backbone another field of view.
    """
    for step in spec.image.steps:
        if step.op in RESIZE_OPS:
            return step.size
        if step.op not in SCALE_FREE_OPS:
            return None
    return None


def pass_decode_size(specs: Sequence[BackboneSpec]) -> DecodeSize:
    """The decode size of one pass feeding several backbones: enough for every one's default, so the largest.

    Full resolution as soon as one backbone decodes at full resolution (the paper's area resize);
    for one backbone, its own default, so a single-backbone store is the one it always was.
    """
    sizes = [decode_size(spec) for spec in specs]
    return DecodeSize(None if None in sizes else max(sizes))


def check_decode_size(chosen: DecodeSize, specs: Sequence[BackboneSpec]) -> None:
    """Raises DecodeSizeTooSmall when a backbone's steps cannot start from `chosen` (see `least_decode_size`)."""
    for spec in specs:
        least = least_decode_size(spec)
        if not chosen.covers(least):
            needed = "full resolution" if least is None else f"at least {least} px"
            raise DecodeSizeTooSmall(
                f"--decode-size {chosen.record()} is too small for backbone {spec.name!r}: its steps need {needed} "
                f"(a smaller decode would {'enlarge the image' if least else 'change its field of view'}); "
                "give a larger size, 'full', or leave the option out"
            )


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


def image_preprocessing(spec: BackboneSpec) -> dict:
    """Everything in the image path that changes the embedding, as a JSON-able record."""
    return {
        **spec.image.record(),
        "view_augmentation": {**asdict(VIEW_AUGMENTATION), "interpolation": VIEW_INTERPOLATION.value},
    }


def _keeps_whole_levels(steps: Sequence[ImageStep]) -> bool:
    """True when the decoded image's whole grey levels stay whole through `steps` (pads, crops, rounded resizes)."""
    return all(step.rounded or step.op not in RESIZE_OPS for step in steps)


def _grey_levels(gray: np.ndarray) -> torch.Tensor:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) grayscale image, got {gray.dtype} of shape {gray.shape}")
    return torch.from_numpy(gray.astype(np.float32)).unsqueeze(0)


def _resize(image: torch.Tensor, step: ImageStep, height: int, width: int, whole_levels: bool) -> torch.Tensor:
    if step.interpolation is Interpolation.AREA:
        resized = area_resize(image, height, width, whole_levels)
    else:
        resized = F.resize(image, [height, width], interpolation=TORCHVISION_INTERPOLATION[step.interpolation],
                           antialias=step.interpolation is not Interpolation.OPENCV_LINEAR).clamp_(0.0, MAX_GREY)
    return resized.round_() if step.rounded else resized


def _area_along(image: torch.Tensor, size: int, axis: int, whole_levels: bool) -> torch.Tensor:
    length = image.shape[axis]
    if length == size:
        return image.to(torch.float64)
    edges = torch.arange(size + 1, dtype=torch.float64) * (length / size)
    whole = edges.floor().clamp_(max=length - 1).long()
    fraction = (edges - whole).unsqueeze(0)
    integral = _block_integral(image, whole, axis) if whole_levels else _cumulative_integral(image, whole, axis)
    at_edges = integral + fraction * image.index_select(axis, whole).movedim(axis, -1).to(torch.float64)
    averages = (at_edges[..., 1:] - at_edges[..., :-1]) * (size / length)  # integral up to each fractional edge
    return averages.movedim(-1, axis)


def _cumulative_integral(image: torch.Tensor, positions: torch.Tensor, axis: int) -> torch.Tensor:
    """integral[..., k] = the float64 sum of the pixels [0, k) along `axis` (moved last), at each of `positions`."""
    moved = image.movedim(axis, -1).to(torch.float64)
    return torch_functional.pad(moved.cumsum(dim=-1), (1, 0))[..., positions]


def _block_integral(image: torch.Tensor, positions: torch.Tensor, axis: int) -> torch.Tensor:
    """`_cumulative_integral` for whole grey levels, bit for bit, from the sums of the blocks between positions.

    Whole grey levels (0..255) have integer partial sums, which floating point holds exactly in
    any order of addition while they stay below 2**24 (float32, a block's sum) and 2**53 (float64,
    the running total). So the block sums, accumulated, are the very values of the full cumulative
    sum read at those positions, at a fraction of its cost: on a 2544 x 3056 radiograph the
    cumulative sum along the rows took about 0.2 s, the block sums (one index_add) take milliseconds.
    """
    stop = int(positions[-1])
    rows = image.movedim(axis, 0)[:stop]
    if stop == 0:  # a one-pixel axis enlarged: every position is its start
        return torch.zeros(*rows.shape[1:], len(positions), dtype=torch.float64)
    block_of_row = torch.bucketize(torch.arange(stop), positions, right=True)
    longest_block = int(torch.diff(positions, prepend=positions.new_zeros(1)).max()) if stop else 0
    exact_in = torch.float32 if longest_block * MAX_GREY < 2.0 ** 24 else torch.float64
    flat = rows.reshape(stop, -1).to(exact_in)
    sums = torch.zeros(len(positions), flat.shape[1], dtype=exact_in).index_add_(0, block_of_row, flat)
    integral = sums.to(torch.float64).cumsum(dim=0)
    return integral.reshape(len(positions), *rows.shape[1:]).movedim(0, -1)


def _normalise(image: torch.Tensor, preprocessing: ImagePreprocessing) -> torch.Tensor:
    channels = image.clamp(0.0, 1.0).expand(preprocessing.channels, -1, -1)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).view(-1, 1, 1)
    return ((channels - mean) / std).contiguous()


def _between(low: float, high: float, fraction: float) -> float:
    return low + fraction * (high - low)
