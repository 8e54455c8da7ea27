"""What one extraction run does, as small picklable values that every shard task receives.

An `ExtractionJob` fills one store. An `ExtractionPass` is one or more image jobs over the same
dataset run together: each image is decoded once, at one decode size, for every job's backbone.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from adaptor_vlp.cache_schema import Modality, segmentation_store_path, store_path
from adaptor_vlp.extract.backbones import BackboneSpec, get_spec
from adaptor_vlp.extract.device_decoding import Decoder
from adaptor_vlp.extract.image_transforms import DecodeSize, check_decode_size, decode_size, pass_decode_size
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.segmentation_input import segmentation_input


@dataclass(frozen=True)
class ExtractionJob:
    """One (dataset, modality, backbone) extraction: the store to fill and how to fill it.

    `registry` are the user's registry files (`--registry`), `max_length` caps a text
    backbone's tokens (`--max-length`), `verbose` lets the backbone libraries print their load
    reports and progress bars. `decode_size` is how large images are decoded before the
    backbone's steps (recorded in the store); None: the backbone's own default (`decode`).
    `decoder` decodes JPEGs on the CPU or on the job's device (recorded where it is the device).
    `feature_maps` also stores a CNN's four intermediate maps (`--feature-maps`, the U-Net's skips).
    `segmentation_size` replaces the backbone's steps by the published segmentation input: the whole
    image resized to that square (SIIM 896, RSNA 224 in the published runs), in its own store
    `<backbone>.seg<size>`; `segmentation_view` k > 0 warps that input by the seeded ShiftScaleRotate of
    (sample, k) (`cache_schema.warps`) into `<backbone>.seg<size>.view<k>`.
    """

    cache_dir: Path
    dataset: str
    modality: Modality
    backbone: str
    weights: Path | None = None
    tokens: bool = False
    views: int = 0
    feature_maps: bool = False
    batch_size: int = 32
    num_workers: int = 0
    device: str = "cpu"
    precision: Precision = Precision.AUTO
    shard_rows: int | None = None
    image_root: Path | None = None
    registry: tuple[Path, ...] = ()
    max_length: int | None = None
    verbose: bool = False
    decode_size: DecodeSize | None = None
    decoder: Decoder = Decoder.CPU
    segmentation_size: int | None = None
    segmentation_view: int = 0

    def __post_init__(self) -> None:
        if self.segmentation_view and self.segmentation_size is None:
            raise ValueError("augmented segmentation views (--segmentation-views) need --segmentation-size: they warp "
                             "the whole image at the task's size")

    @property
    def spec(self) -> BackboneSpec:
        """The backbone to run, resolved from the registries (or an ad-hoc name) for this job's modality; with
        `segmentation_size`, reading the whole image resized to that square (`extract.segmentation_input`)."""
        spec = get_spec(self.backbone, self.registry, self.modality, self.max_length)
        return spec if self.segmentation_size is None else segmentation_input(spec, self.segmentation_size)

    @property
    def store(self) -> Path:
        """The job's store: the plain one, or with `segmentation_size` the segmentation store of that size (of
        view `segmentation_view`), beside it (`cache_schema.segmentation_store_path`)."""
        if self.segmentation_size is not None:
            return segmentation_store_path(self.cache_dir, self.dataset, self.backbone, self.segmentation_size,
                                           self.segmentation_view)
        return store_path(self.cache_dir, self.dataset, self.modality, self.backbone)

    @property
    def decode(self) -> DecodeSize:
        """The decode size this job's images are read at: the one given, else the backbone's default."""
        return self.decode_size or DecodeSize(decode_size(self.spec))


PER_BACKBONE_FIELDS = frozenset({"backbone", "weights", "tokens", "feature_maps"})
"""The fields in which the jobs of one pass may differ (the backbone, its weights and which of its extra arrays
its store keeps: patch tokens for a token decoder, feature maps for the U-Net); everything else describes the
pass itself."""


class PassError(ValueError):
    """Jobs that cannot run as one pass: none, a backbone named twice, a text backbone among image ones,
    differing settings.
    """


@dataclass(frozen=True)
class ExtractionPass:
    """Jobs run together over one dataset, one store each: every image decoded once, for all their backbones.

    Build it with `of`, which checks the jobs and fixes the decode size in each of them: the one
    given (checked against every backbone), else what the largest of their inputs needs
    (`image_transforms.pass_decode_size`). A pass of one job is a plain run of that job.
    """

    jobs: tuple[ExtractionJob, ...]

    @classmethod
    def of(cls, jobs: Sequence[ExtractionJob]) -> ExtractionPass:
        """The checked pass; PassError (or the registry's UnknownBackbone) names what cannot run together."""
        if not jobs:
            raise PassError("no backbone to extract: name at least one")
        first = jobs[0]
        repeated = [name for name, count in Counter(job.backbone for job in jobs).items() if count > 1]
        if repeated:
            raise PassError(f"backbone {repeated[0]!r} is named more than once; name each backbone once")
        for job in jobs[1:]:
            differing = [f.name for f in dataclasses.fields(job)
                         if f.name not in PER_BACKBONE_FIELDS and getattr(job, f.name) != getattr(first, f.name)]
            if differing:
                raise PassError(f"jobs {first.backbone!r} and {job.backbone!r} differ in {', '.join(differing)}; "
                                "one pass shares every setting but the backbone, its weights and which extra "
                                "arrays each store keeps (tokens, feature maps)")
        specs = [job.spec for job in jobs]
        for job, spec in zip(jobs, specs):
            if spec.modality is not job.modality:
                raise PassError(f"backbone {job.backbone!r} is a {spec.modality.value} backbone; "
                                f"`adaptor extract {job.modality.value}s` takes {job.modality.value} backbones "
                                f"(extract it with `adaptor extract {spec.modality.value}s`)")
        if first.modality is Modality.TEXT:
            if len(jobs) > 1:
                raise PassError("one pass shares the decoding of images; extract each text backbone on its own")
            return cls(tuple(jobs))
        if first.decode_size is None:
            chosen = pass_decode_size(specs)
        else:
            chosen = first.decode_size
            check_decode_size(chosen, specs)
        return cls(tuple(dataclasses.replace(job, decode_size=chosen) for job in jobs))

    @property
    def settings(self) -> ExtractionJob:
        """The job whose shared settings (dataset, batches, decoders, device, ...) the whole pass uses."""
        return self.jobs[0]

    @property
    def decode(self) -> DecodeSize:
        return self.settings.decode
