"""The image a segmentation run's backbone reads: the whole radiograph resized to the task's square.

The published segmentation runs did not use the backbones' classification steps (longest side to
256, pad, centre crop 224): MGCA's SIIMImageDataset and RSNASegmentDataset
(MGCA/mgca/datasets/segmentation_dataset.py:91-92 and 237-238) resize the whole radiograph with
cv2.resize to crop_size x crop_size (896 for SIIM in shell/segment-siim.sh, the default 224 for
RSNA), normalise it with albumentations' Normalize(mean=0.5, std=0.5) whatever the backbone (their
own get_transforms, 144-166 and 248-270: the backbone's transform passed in is never used in the
segmentation phase; ResNet-AE then reads one grey channel), and they score masks at that size.
So a segmentation store's input is in [-1, 1] for every backbone: the paper's DINOv2 entries read
the same normalisation everywhere, but ResNet-AE's Adaptor trained on xrv's [-1024, 1024] scale (the
published protocol's fault `segmentation-normalisation`, kept here), and so would any backbone added
with its own statistics.
`segmentation_input(spec, size)` is the backbone with those steps; the store records them
(`preprocessing.geometry`, `preprocessing.image_size`), so masks follow the same frame and a store
extracted at one size is never resumed at another. `segmentation_view` warps that input as the
published training did (`cache_schema.warps`), for the stores of augmented views.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from adaptor_vlp.cache_schema.warps import draw_warp, view_seed, warp_image
from adaptor_vlp.extract.backbone_spec import BackboneSpec, ImageStep, Interpolation, SpecError, StepOp

SEGMENTATION_RESIZE = Interpolation.OPENCV_LINEAR
"""cv2.resize's default interpolation, INTER_LINEAR (segmentation_dataset.py:92)."""
SEGMENTATION_MEAN_STD = 0.5
"""MGCA/mgca/datasets/segmentation_dataset.py:144,161 and 248,265: Normalize(mean=(0.5,) * 3, std=(0.5,) * 3)."""


def segmentation_input(spec: BackboneSpec, size: int) -> BackboneSpec:
    """`spec` reading the whole image resized to `size` x `size` (OpenCV's INTER_LINEAR) and normalised with mean
    = std = 0.5 per channel, its channels unchanged. The entry's own decode size (e.g. DINOv2's 512 px, measured
    faithful for its classification steps) does not carry over: OpenCV's resize reads the full-resolution image."""
    if spec.image is None:
        raise SpecError(f"backbone {spec.name!r} is a text backbone; it has no image input to resize")
    if size < 1:
        raise SpecError(f"a segmentation image size is a positive number of pixels, got {size}")
    steps = (ImageStep(StepOp.RESIZE, size, SEGMENTATION_RESIZE),)
    normalisation = (SEGMENTATION_MEAN_STD,) * spec.image.channels
    return dataclasses.replace(spec, image=dataclasses.replace(spec.image, steps=steps, decode_size=None,
                                                               mean=normalisation, std=normalisation))


def segmentation_view(pixels: torch.Tensor, spec: BackboneSpec, sample_id: str, view: int) -> torch.Tensor:
    """The backbone's (C, S, S) input warped by the seeded ShiftScaleRotate of (sample, view); pixels from
    outside the image take the normalised value of black, as the published border (constant 0) did before
    normalisation. Bilinear sampling commutes with the per-channel normalisation, so warping after it is
    the same as warping the grey levels before it (without OpenCV's rounding to whole levels)."""
    fill = [-mean / std for mean, std in zip(spec.image.mean, spec.image.std)]
    warped = warp_image(pixels.numpy().astype(np.float64), draw_warp(view_seed(sample_id, view)), fill)
    return torch.from_numpy(warped.astype(np.float32))
