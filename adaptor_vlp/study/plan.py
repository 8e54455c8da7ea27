"""A study's steps in dependency order, derived from its spec, and where each one stands.

Manifests first (the pretraining dataset, then each downstream dataset), then extractions (every
image and text backbone over the pretraining dataset, every image backbone over each downstream
dataset: the plain store for classification, and for segmentation the store of the task's input
size, with patch tokens or the U-Net's feature maps, and its augmented views), then one Adaptor per backbone
pair (per grid combination), then one head per task, image backbone, text row or raw-backbone
baseline, data fraction and seed. Cells a task leaves out (`left_out` in the spec) get no step.
A text row reads the Adaptors of its own text entry, or, under a protocol that names another entry for it
(`[backbones.text_by_protocol]`), of that entry: the study extracts and trains those entries too.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

from adaptor_vlp.cache_schema import Modality
from adaptor_vlp.evaluate.segmentation_protocol import SegmentationProtocol
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.study.spec import StudySpec, TaskKind, TaskSpec
from adaptor_vlp.study.steps import (
    ExtractStep,
    HeadStep,
    ManifestStep,
    Status,
    Step,
    StepState,
    TrainStep,
)
from adaptor_vlp.train.encoding import resolve_device
from adaptor_vlp.train.recipe import RECIPES
from adaptor_vlp.train.sweep import SweepRun, expand_grid


@dataclass(frozen=True)
class LeftOutCell:
    """A task's cells of one image backbone that the spec leaves out, and why."""

    task: str
    image: str
    reason: str


@dataclass(frozen=True)
class StudyPlan:
    """Every step of a study in dependency order, and the cells left out by the spec."""

    spec: StudySpec
    steps: tuple[Step, ...]
    left_out: tuple[LeftOutCell, ...]

    def step(self, key: str) -> Step:
        return self._by_key[key]

    @cached_property
    def _by_key(self) -> dict[str, Step]:
        return {step.key: step for step in self.steps}

    def states(self) -> dict[str, StepState]:
        """Every step's state from the records on disk; a pending step that needs a step that cannot run cannot run
        either, and says which step is the cause and why."""
        states = {step.key: step.state() for step in self.steps}
        cause = {key: (key, state.detail) for key, state in states.items() if state.status is Status.BLOCKED}
        for step in self.steps:
            blocked = [key for key in step.depends_on if key in cause]
            if states[step.key].status is Status.PENDING and blocked:
                cause[step.key] = cause[blocked[0]]
                root, reason = cause[step.key]
                states[step.key] = StepState(Status.BLOCKED, f"needs {root}, which cannot run: {reason}")
        return states

    def head_steps(self) -> list[HeadStep]:
        return [step for step in self.steps if isinstance(step, HeadStep)]


def plan_study(spec: StudySpec) -> StudyPlan:
    """The study's steps, in dependency order."""
    extract_device = str(resolve_device(spec.extract.device))
    manifests = [ManifestStep(_manifest_key(dataset.name), dataset, spec.cache)
                 for dataset in (spec.pretraining, *spec.datasets.values())]
    extracts = list(_extract_steps(spec, extract_device))
    trains = [_train_step(spec, run) for run in _sweep_runs(spec)]
    heads = list(_head_steps(spec, trains))
    left_out = tuple(
        LeftOutCell(task.name, entry.image, entry.reason) for task in spec.tasks for entry in task.left_out
    )
    return StudyPlan(spec, (*manifests, *extracts, *trains, *heads), left_out)


def _extract_steps(spec: StudySpec, device: str) -> Iterator[ExtractStep]:
    pretraining = spec.pretraining.name
    for modality, backbones in ((Modality.IMAGE, spec.image_backbones), (Modality.TEXT, spec.trained_text_backbones)):
        for backbone in backbones:
            views = spec.views if modality is Modality.IMAGE else 0
            yield _extract_step(spec, pretraining, modality, backbone, device, tokens=False, views=views)
    for dataset in spec.datasets:
        for backbone in spec.image_backbones:
            for need in _store_needs(spec, dataset, backbone):
                for view in range(need.views + 1):
                    yield _extract_step(spec, dataset, Modality.IMAGE, backbone, device, tokens=need.tokens, views=0,
                                        feature_maps=need.feature_maps, segmentation_size=need.size,
                                        segmentation_view=view)


@dataclass(frozen=True)
class _StoreNeed:
    """One image store of a downstream dataset that the study's tasks read: the plain store (`size` None) or the
    segmentation store of a size, with what its tasks need in it and how many augmented views of it."""

    size: int | None
    tokens: bool
    feature_maps: bool
    views: int


def _store_needs(spec: StudySpec, dataset: str, backbone: str) -> list[_StoreNeed]:
    """The stores of `backbone` on `dataset` that the computed cells of the study's tasks read."""
    by_size: dict[int | None, list[TaskSpec]] = {}
    for task in spec.tasks:
        if task.dataset == dataset and task.left_out_reason(backbone) is None:
            by_size.setdefault(_store_read(spec, task)[0], []).append(task)
    needs = []
    for size, tasks in by_size.items():
        segmenting = [task for task in tasks if task.kind is TaskKind.SEGMENT]
        needs.append(_StoreNeed(size, tokens=any(not task.uses_unet(backbone) for task in segmenting),
                                feature_maps=any(task.uses_unet(backbone) for task in segmenting),
                                views=max((_store_read(spec, task)[1] for task in segmenting), default=0)))
    return needs


def _store_read(spec: StudySpec, task: TaskSpec) -> tuple[int | None, int]:
    """The input size of the store a task reads (None: the plain store, as classification reads it) and how many
    augmented views of it its decoder trains on."""
    if task.kind is not TaskKind.SEGMENT:
        return None, 0
    recipe = _decoder_recipe(spec, task)
    return recipe.image_size, 0 if recipe.image_size is None else recipe.views


def _decoder_recipe(spec: StudySpec, task: TaskSpec) -> SegmentationProtocol:
    return task.decoder_recipe(spec.datasets[task.dataset].layout.value)


def _extract_step(spec: StudySpec, dataset: str, modality: Modality, backbone: str, device: str, tokens: bool,
                  views: int, feature_maps: bool = False, segmentation_size: int | None = None,
                  segmentation_view: int = 0) -> ExtractStep:
    job = ExtractionJob(spec.cache, dataset, modality, backbone, tokens=tokens, views=views,
                        feature_maps=feature_maps, batch_size=spec.extract.batch_size,
                        num_workers=spec.extract.workers if modality is Modality.IMAGE else 0,
                        device=device, precision=spec.extract.precision, segmentation_size=segmentation_size,
                        segmentation_view=segmentation_view)
    key = extract_key(dataset, modality, backbone, segmentation_size, segmentation_view)
    return ExtractStep(key, job, (_manifest_key(dataset),))


def _sweep_runs(spec: StudySpec) -> Iterator[SweepRun]:
    for vision in spec.image_backbones:
        for text in spec.trained_text_backbones:
            yield from expand_grid(spec.adaptor.sweep_grid(vision, text), spec.adaptor.recipe,
                                   source=f"{spec.path}: adaptor")


def _train_step(spec: StudySpec, run: SweepRun) -> TrainStep:
    dataset = spec.pretraining.name
    return TrainStep(f"train {run.name}", run, spec.cache, dataset, spec.runs_dir, spec.device,
                     (extract_key(dataset, Modality.IMAGE, run.vision), extract_key(dataset, Modality.TEXT, run.text)))


def _head_steps(spec: StudySpec, trains: list[TrainStep]) -> Iterator[HeadStep]:
    rank_by = spec.adaptor.rank_by or RECIPES[spec.adaptor.recipe].select_by
    for task in spec.tasks:
        for vision in spec.image_backbones:
            if task.left_out_reason(vision) is not None:
                continue
            recipe = _decoder_recipe(spec, task) if task.kind is TaskKind.SEGMENT else None
            size, views = _store_read(spec, task)
            extractions = tuple(extract_key(task.dataset, Modality.IMAGE, vision, size, view)
                                for view in range(views + 1))
            for row in (*spec.text_backbones, None):
                text = None if row is None else spec.text_entry(task, row)
                pair_trains = [step for step in trains if (step.run.vision, step.run.text) == (vision, text)]
                for fraction in task.fractions:
                    for seed in task.seeds:
                        yield HeadStep(
                            head_key(task, vision, text, fraction, seed), task, vision, text, fraction, seed,
                            spec.cache, spec.results_dir, spec.runs_dir, tuple(step.run for step in pair_trains),
                            rank_by, spec.device, (*extractions, *(step.key for step in pair_trains)),
                            recipe=recipe)


def _manifest_key(dataset: str) -> str:
    return f"manifest {dataset}"


def extract_key(dataset: str, modality: Modality, backbone: str, segmentation_size: int | None = None,
                segmentation_view: int = 0) -> str:
    """The key of the step that extracts `backbone` over `dataset` (into its segmentation store of a size, or
    view k of that store, when those are given)."""
    key = f"extract {modality.value} {backbone} on {dataset}"
    if segmentation_size is not None:
        key += f" at {segmentation_size} px"
    return key + (f" view {segmentation_view}" if segmentation_view else "")


def head_key(task: TaskSpec, vision: str, text: str | None, fraction: float, seed: int) -> str:
    """The key of one head step: task, features (pair, or the image backbone's baseline), fraction, seed."""
    features = f"{vision} baseline" if text is None else f"{vision}+{text}"
    return f"head {task.name} {features} {fraction:g}% seed {seed}"
