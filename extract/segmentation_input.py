"""The image a segmentation run's backbone reads: the whole radiograph resized to the task's square.

The published segmentation runs did not use the backbones' classification steps (longest side to
256, pad, centre crop 224): MGCA's SIIMImageDataset and RSNASegmentDataset
(MGCA/mgca/datasets/segmentation_dataset.py:91-92 and 237-238) resize the whole radiograph with
cv2.resize to crop_size x crop_size (896 for SIIM in shell/segment-siim.sh, the default 224 for
RSNA) and normalise it as the backbone's transform does, and they score masks at that size.
`segmentation_input(spec, size)` is the backbone with those steps; the store records them
(`preprocessing.geometry`, `preprocessing.image_size`), so masks follow the same frame and a store
extracted at one size is never resumed at another.
"""
from __future__ import annotations

import dataclasses

from adaptor_vlp.extract.backbone_spec import BackboneSpec, ImageStep, Interpolation, SpecError, StepOp

SEGMENTATION_RESIZE = Interpolation.OPENCV_LINEAR
"""cv2.resize's default interpolation, INTER_LINEAR (segmentation_dataset.py:92)."""


def segmentation_input(spec: BackboneSpec, size: int) -> BackboneSpec:
    """`spec` reading the whole image resized to `size` x `size` (OpenCV's INTER_LINEAR), channels and
    normalisation unchanged."""
    if spec.image is None:
        raise SpecError(f"backbone {spec.name!r} is a text backbone; it has no image input to resize")
    if size < 1:
        raise SpecError(f"a segmentation image size is a positive number of pixels, got {size}")
    steps = (ImageStep(StepOp.RESIZE, size, SEGMENTATION_RESIZE),)
    return dataclasses.replace(spec, image=dataclasses.replace(spec.image, steps=steps))
