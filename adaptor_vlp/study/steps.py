"""The steps of a study: what each one runs (through its stage's public functions) and how its records say it is done.

Four kinds of step, each a small picklable value, so a step can run in this process or as a Dask task:

- `ManifestStep`: read a dataset tree into `CACHE/<dataset>/manifest.csv` with the reader the
  dataset registry (`extract.datasets.registry`) names for its layout, as `adaptor extract
  manifest` does; done when the manifest's CSV matches the hash its JSON records.
- `ExtractStep`: run a frozen backbone over a dataset (`extract.run.run_extraction`, the code of
  `adaptor extract images|texts`); done when the store's every shard has its completion marker.
  Image steps of one dataset with the same settings run together (`extract_in_one_pass`, the code
  of `adaptor extract images --backbone a,b,c`): each image is decoded once for all their backbones.
- `TrainStep`: train one Adaptor (`train.sweep.train_sweep_run`, the code of `adaptor train run`
  and `sweep`, resuming an interrupted run); done when the run folder's completion marker exists.
  Train steps on one image store with the same recipe train as one stack (`train_in_one_stack`,
  the code of `adaptor train sweep`'s stacked groups), whatever their text stores; each keeps its
  own run folder, resume and log entry.
- `HeadStep`: fit one head or decoder for a task, backbone pair (or raw-backbone baseline), data
  fraction and seed (`evaluate.commands`, the code of `adaptor evaluate classify|segment`); done
  when the results folder holds a result file for it, made with the pair's current Adaptor.

No step keeps a record of its own: a step done by hand with the stage commands counts as done.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, ProvenanceMismatch, StoreError, dataset_dir
from adaptor_vlp.cache_schema.manifest import Manifest, ManifestError, manifest_sha256, read_manifest, write_manifest
from adaptor_vlp.evaluate.classify import ClassifySettings
from adaptor_vlp.evaluate.commands import DatasetEvaluation, classify_dataset, segment_dataset
from adaptor_vlp.evaluate.features import open_adaptor_run
from adaptor_vlp.evaluate.heads import LabelStructure
from adaptor_vlp.evaluate.report import format_interval
from adaptor_vlp.evaluate.results import (
    EvaluationTask,
    FeatureSpace,
    ResultError,
    StoredResult,
    read_results,
    write_result,
)
from adaptor_vlp.evaluate.segment import METHOD as DECODER_METHOD
from adaptor_vlp.evaluate.segment import SegmentSettings
from adaptor_vlp.evaluate.segmentation_protocol import SegmentationProtocol
from adaptor_vlp.extract.backbone_spec import SPEC_DECIDED_TEXT_RECORD
from adaptor_vlp.extract.backbones import BackboneSpec, UnknownBackbone, get_spec
from adaptor_vlp.extract.datasets.registry import dataset_layout
from adaptor_vlp.extract.image_transforms import DecodeSize
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.protocol_manifest import apply_protocol
from adaptor_vlp.extract.run import ExtractionSummary, run_multi_extraction
from adaptor_vlp.extract.weights import MissingWeights, locate_tokenizer, locate_weights, weights_origin
from adaptor_vlp.protocols import HeadTask, ProtocolRecord
from adaptor_vlp.study.spec import DatasetSpec, Metric, TaskKind, TaskSpec
from adaptor_vlp.train.checkpoint import CheckpointError, CheckpointKind, checkpoint_paths, read_record
from adaptor_vlp.train.loop import TrainResult, read_completed
from adaptor_vlp.train.recipe import Selection
from adaptor_vlp.train.stacked import stack_key, stackable
from adaptor_vlp.train.sweep import SweepOutcome, SweepRun, rank_outcomes, train_sweep_group, train_sweep_run


class StepKind(str, Enum):
    """What a step does, in dependency order."""

    MANIFEST = "manifest"
    EXTRACT = "extract"
    TRAIN = "train"
    HEAD = "head"


class Status(str, Enum):
    """Where a step stands, decided from the records the stages write."""

    DONE = "done"
    PENDING = "pending"
    """Can run now, or once the steps it depends on are done."""
    BLOCKED = "cannot run"
    """Needs something only a person can provide or decide: data, weights, a store built otherwise."""


@dataclass(frozen=True)
class StepState:
    """A step's status and what it means: what the records show, what running it will do, or why it cannot run."""

    status: Status
    detail: str


class StepFailed(RuntimeError):
    """A step ran but did not produce what it should; the message says why."""


class Step(ABC):
    """One unit of a study: its key, kind, the keys of the steps it needs first, and how to check and run it."""

    key: str
    kind: StepKind
    depends_on: tuple[str, ...]

    @abstractmethod
    def needs(self) -> list[str]:
        """What the step needs besides other steps: data trees, backbone weights (one line each)."""

    @abstractmethod
    def state(self) -> StepState:
        """Where the step stands, from the records on disk."""

    @abstractmethod
    def execute(self, scheduler: str) -> str:
        """Runs the step (`scheduler` places extraction shards) and returns a one-line account; raises on failure."""


@dataclass(frozen=True)
class ManifestStep(Step):
    """Read one dataset tree into the cache's manifest of that dataset."""

    key: str
    dataset: DatasetSpec
    cache: Path
    kind: StepKind = StepKind.MANIFEST
    depends_on: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return dataset_dir(self.cache, self.dataset.name)

    def needs(self) -> list[str]:
        lines = [f"data: {dataset_layout(self.dataset.layout).description}, at {self.dataset.root}"]
        if self.dataset.reports is not None:
            lines.append(f"data: reports at {self.dataset.reports}")
        if self.dataset.protocol is not None:
            lines.append(f"split: protocol {self.dataset.protocol.name} ({self.dataset.protocol.source}), "
                         f"{self.dataset.protocol_kind.value} tasks")
        return lines

    def state(self) -> StepState:
        try:
            manifest = read_manifest(self.folder)
        except (ManifestError, OSError):
            manifest = None
        if manifest is not None and Path(manifest.image_root).resolve() != self.dataset.root.resolve():
            return StepState(Status.BLOCKED, f"{self.folder} holds a manifest read from {manifest.image_root}, the "
                                             f"spec reads {self.dataset.root}: give the study another --cache, or "
                                             f"move {self.folder} away to read the spec's tree")
        differing = _differing_option(manifest, self.dataset.reader_options()) if manifest is not None else None
        if differing is not None:
            return StepState(Status.BLOCKED, f"{self.folder} holds a manifest read with {differing}: give the study "
                                             f"another --cache, or move {self.folder} away to read it again")
        if manifest is not None:
            other = self._other_protocol(manifest)
            if other:
                return StepState(Status.BLOCKED, f"{self.folder} holds a manifest {other}, not as protocol "
                                                 f"{self.dataset.protocol.name} splits it: move {self.folder} away "
                                                 "to write this protocol's split")
            return StepState(Status.DONE, f"{len(manifest.rows)} images in {self.folder}")
        if not self.dataset.root.is_dir():
            return StepState(Status.BLOCKED, f"data missing: {self.dataset.root} is not a folder; put the "
                                             f"{self.dataset.layout.value} tree there (see its needs) or point the "
                                             "spec's root at it")
        return StepState(Status.PENDING, f"reads {self.dataset.root} ({self.dataset.layout.value} layout)")

    def _other_protocol(self, manifest: Manifest) -> str | None:
        """How the manifest was split, when that is not the dataset's protocol split; None when it is."""
        if self.dataset.protocol is None:
            return None
        record = ProtocolRecord.from_options(manifest.options, str(self.folder))
        if record is None:
            return "split without a protocol"
        task = self.dataset.protocol.task(self.dataset.layout.value, HeadTask(self.dataset.protocol_kind.value))
        if record.name != self.dataset.protocol.name or not record.split_matches(task.split):
            return f"split by protocol {record.name!r} ({dict(record.split)})"
        return None

    def execute(self, scheduler: str) -> str:
        layout = dataset_layout(self.dataset.layout)
        manifest = layout.read(self.dataset.root.resolve(), **self.dataset.reader_keywords())
        if self.dataset.protocol is not None:
            manifest = apply_protocol(manifest, self.dataset.protocol, HeadTask(self.dataset.protocol_kind.value),
                                      self.dataset.protocol_fractions)
        write_manifest(manifest, self.folder)
        splits = ", ".join(f"{split} {count}" for split, count in manifest.split_counts().items())
        return f"{len(manifest.rows)} images ({splits}), {sum(manifest.exclusions.values())} left out -> {self.folder}"


def _differing_option(manifest: Manifest, expected: Mapping[str, Any]) -> str | None:
    """'KEY = FOUND, the spec asks for WANTED' for the first reader option the manifest records otherwise, or None."""
    for key, wanted in expected.items():
        found = manifest.options.get(key, False if isinstance(wanted, bool) else None)
        if found != wanted:
            return f"{key} = {found!r}, the spec asks for {wanted!r}"
    return None


@dataclass(frozen=True)
class ExtractStep(Step):
    """Embed one dataset's images or texts with one frozen backbone into its cache store."""

    key: str
    job: ExtractionJob
    depends_on: tuple[str, ...]
    kind: StepKind = StepKind.EXTRACT

    def needs(self) -> list[str]:
        what = "images" if self.job.modality is Modality.IMAGE else "report texts"
        return [f"data: the {what} of the {self.job.dataset} manifest",
                f"weights: {describe_weights(self.job.backbone)}"]

    def state(self) -> StepState:
        if (self.job.store / "zarr.json").is_file():
            return self._existing_store_state()
        problem = backbone_problem(self.job.backbone, self.job.modality)
        if problem:
            return StepState(Status.BLOCKED, problem)
        tokens = " with patch tokens" if self.job.tokens else ""
        maps = " with feature maps" if self.job.feature_maps else ""
        size = "" if self.job.segmentation_size is None else f", the whole image at {self.job.segmentation_size} px"
        view = f", warped as augmented view {self.job.segmentation_view}" if self.job.segmentation_view else ""
        return StepState(Status.PENDING, f"writes {self.job.store}{tokens}{maps}{size}{view}")

    def execute(self, scheduler: str) -> str:
        return self.account(extract_in_one_pass([self], scheduler)[0])

    def command(self) -> str:
        """The stage command that writes this step's store (with views, the store of each view up to this one)."""
        job = self.job
        options = [f"--cache {job.cache_dir}", f"--dataset {job.dataset}", f"--backbone {job.backbone}"]
        options += [flag for flag, wanted in (("--tokens", job.tokens), ("--feature-maps", job.feature_maps)) if wanted]
        if job.segmentation_size is not None:
            options.append(f"--segmentation-size {job.segmentation_size}")
        if job.segmentation_view:
            options.append(f"--segmentation-views {job.segmentation_view}")
        return f"adaptor extract {job.modality.value}s {' '.join(options)}"

    def pass_settings(self) -> ExtractionJob | None:
        """What this step must share with other image steps to run in one pass with them; None: it runs alone.

        That is its job less what may differ per backbone (`extract.job.PER_BACKBONE_FIELDS`), with the decode
        size its store records if the store is begun (it resumes only at that size), else none (the pass
        chooses it). Text steps, and stores begun before the decode size was recorded, run alone.
        """
        if self.job.modality is not Modality.IMAGE:
            return None
        recorded = None
        if (self.job.store / "zarr.json").is_file():
            try:
                recorded = CacheStore.open(self.job.store).provenance.preprocessing.get("decode_size")
            except (StoreError, ValueError):
                return None
            if recorded is None:
                return None
        decode = None if recorded is None else DecodeSize.parse(str(recorded))
        return dataclasses.replace(self.job, backbone="", weights=None, tokens=False, feature_maps=False,
                                   decode_size=decode)

    def account(self, summary: ExtractionSummary) -> str:
        """The step's one-line account of its run; StepFailed when no sample of its store could be embedded."""
        if summary.rows and sum(summary.failures.values()) == summary.rows:
            reasons = ", ".join(f"{count} {reason}" for reason, count in summary.failures.most_common(3))
            raise StepFailed(f"no sample of {summary.store} could be embedded ({reasons}); is the data where the "
                             f"{self.job.dataset} manifest says?")
        return summary.final_line()

    def _existing_store_state(self) -> StepState:
        store_path = self.job.store
        try:
            store = CacheStore.open(store_path, expect={"modality": self.job.modality, "backbone": self.job.backbone})
        except (StoreError, ProvenanceMismatch) as error:
            return StepState(Status.BLOCKED, str(error))
        manifest_folder = dataset_dir(self.job.cache_dir, self.job.dataset)
        try:
            current = manifest_sha256(manifest_folder)
        except (ManifestError, OSError):
            current = None
        overwrite = f"{self.command()} --overwrite"
        if current is not None and store.provenance.manifest_sha256 != current:
            return StepState(Status.BLOCKED, f"{store_path} was built from another manifest of {self.job.dataset}; "
                                             f"rebuild it: {overwrite}")
        if self.job.modality is Modality.TEXT:
            recorded = {key: store.provenance.preprocessing.get(key) for key in SPEC_DECIDED_TEXT_RECORD}
            wanted = {key: self.job.spec.text_record().get(key) for key in SPEC_DECIDED_TEXT_RECORD}
            differing = next((key for key in SPEC_DECIDED_TEXT_RECORD if recorded[key] != wanted[key]), None)
            if differing is not None:
                return StepState(Status.BLOCKED, f"{store_path} records preprocessing.{differing} = "
                                                 f"{recorded[differing]!r}, backbone {self.job.backbone!r} asks "
                                                 f"for {wanted[differing]!r}; rebuild it: {overwrite}")
        if self.job.tokens and not store.has(ArrayName.TOKENS):
            return StepState(Status.BLOCKED, f"{store_path} holds no patch tokens, which segmentation needs; "
                                             f"rebuild it: {overwrite}")
        if self.job.feature_maps and not store.has(ArrayName.FEATURE_MAP_1):
            return StepState(Status.BLOCKED, f"{store_path} holds no feature maps, which the U-Net decoder reads; "
                                             f"rebuild it: {overwrite}")
        if not store.is_complete:
            return StepState(Status.PENDING, f"resumes {store_path}: {len(store.complete_shard_indices())} of "
                                             f"{len(store.shards())} shards complete")
        unreadable = len(store.failures())
        return StepState(Status.DONE, f"{store.n_rows} rows ({unreadable} unreadable) in {store_path}")


def extract_in_one_pass(steps: Sequence[ExtractStep], scheduler: str) -> list[ExtractionSummary]:
    """Runs extraction steps with equal `pass_settings` as one pass (one step: a plain run); a summary per step.

    A failure of the pass raises (each store keeps its complete shards; the rerun resumes each).
    """
    settings = steps[0].pass_settings()
    jobs = [step.job if settings is None else dataclasses.replace(step.job, decode_size=settings.decode_size)
            for step in steps]
    return run_multi_extraction(jobs, scheduler=scheduler)


@dataclass(frozen=True)
class TrainStep(Step):
    """Train one Adaptor on a pretraining image store and text store."""

    key: str
    run: SweepRun
    cache: Path
    dataset: str
    runs_dir: Path
    device: str
    depends_on: tuple[str, ...]
    kind: StepKind = StepKind.TRAIN

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run.name

    def needs(self) -> list[str]:
        return [f"stores: {self.dataset} {self.run.vision} images and {self.run.text} texts"]

    def state(self) -> StepState:
        result = read_completed(self.run_dir)
        recorded = _recorded_recipe(self.run_dir, CheckpointKind.LAST if result is None else CheckpointKind.BEST)
        wanted = self.run.recipe.to_dict()
        if recorded is not None and recorded != wanted:
            differing = next(name for name in wanted if recorded.get(name) != wanted[name])
            return StepState(Status.BLOCKED, f"{self.run_dir} holds a run trained with {differing}="
                                             f"{recorded.get(differing)!r}, the spec asks for {wanted[differing]!r}; "
                                             "move that folder away or change the spec")
        if result is not None:
            return StepState(Status.DONE, _best_epoch(result))
        if recorded is not None:
            return StepState(Status.PENDING, f"resumes {self.run_dir} from its last checkpoint")
        return StepState(Status.PENDING, f"trains into {self.run_dir}")

    def execute(self, scheduler: str) -> str:
        return self.account(train_sweep_run(self.run, self.cache, self.dataset, self.runs_dir, self.device))

    def stack_settings(self) -> tuple | None:
        """What this step must share with other train steps to train in one stack with them; None: it trains alone.

        The cache, dataset, runs folder, device, image backbone and the recipe's stacked settings
        (`train.stacked.stack_key`); the text backbones may differ. Token-input runs train alone.
        """
        if not stackable(self.run.recipe):
            return None
        return self.cache, self.dataset, self.runs_dir, self.device, self.run.vision, stack_key(self.run.recipe)

    def account(self, result: TrainResult) -> str:
        """The step's one-line account of its training run."""
        return f"{_best_epoch(result)}, {result.wall_seconds:.1f} s training -> {self.run_dir}"


def train_in_one_stack(steps: Sequence[TrainStep]) -> list[TrainResult]:
    """Trains train steps of equal `stack_settings` as one stack (one step: a plain run); a result per step.

    Each run resumes from its own last checkpoint; a failure raises (each run keeps its checkpointed epochs).
    """
    first = steps[0]
    return train_sweep_group([step.run for step in steps], first.cache, first.dataset, first.runs_dir, first.device)


@dataclass(frozen=True)
class HeadStep(Step):
    """Fit one head (or decoder) of a task on one image backbone, through one pair's Adaptor or on the raw backbone."""

    key: str
    task: TaskSpec
    vision: str
    text: str | None
    fraction: float
    seed: int
    cache: Path
    results_dir: Path
    runs_dir: Path
    candidates: tuple[SweepRun, ...]
    rank_by: Selection
    device: str
    depends_on: tuple[str, ...]
    kind: StepKind = StepKind.HEAD
    recipe: SegmentationProtocol | None = None
    """A segmentation head's decoder recipe as the spec and protocol make it (`TaskSpec.decoder_recipe`; None for
    classification): the head trains with it (`segment_dataset` applies the protocol to it again, which keeps it
    as it is), and a result trained with another is recomputed."""

    @property
    def space(self) -> FeatureSpace:
        return FeatureSpace.BACKBONE if self.text is None else FeatureSpace.ADAPTOR

    @property
    def folder(self) -> Path:
        """This task's results for this backbone pair (or the image backbone alone, for the baseline)."""
        return self.results_dir / self.task.name / (self.vision if self.text is None else f"{self.vision}+{self.text}")

    def needs(self) -> list[str]:
        source = "the raw backbone's features" if self.text is None else f"the {self.vision}+{self.text} Adaptor"
        return [f"store: {self.task.dataset} {self.vision} images; {source}"]

    def result(self) -> StoredResult | None:
        """This step's result file, when one was written."""
        return find_result(self.folder, self.task, self.space, self.fraction, self.seed)

    def state(self) -> StepState:
        stored = self.result()
        if stored is None:
            return StepState(Status.PENDING, f"writes a result into {self.folder}")
        try:
            manifest = manifest_sha256(dataset_dir(self.cache, self.task.dataset))
        except (ManifestError, OSError):
            manifest = None
        if stored.record.context.provenance.get("image", {}).get("manifest_sha256") != manifest:
            return StepState(Status.PENDING, f"recomputes {stored.path.name}: it was made from another manifest of "
                                             f"{self.task.dataset}")
        differing = self._recipe_difference(stored)
        if differing is not None:
            return StepState(Status.PENDING, f"recomputes {stored.path.name}: its decoder trained with {differing}")
        if self.text is not None:
            current = self.adaptor_weights_sha256()
            if current != (stored.record.context.adaptor or {}).get("weights_sha256"):
                return StepState(Status.PENDING, f"recomputes {stored.path.name}: it was made with another "
                                                 "Adaptor checkpoint")
        return StepState(Status.DONE, result_line(stored, self.task.metric))

    def _recipe_difference(self, stored: StoredResult) -> str | None:
        """'KEY = FOUND, the spec asks for WANTED' for the first decoder recipe field the result records otherwise."""
        if self.recipe is None:
            return None
        recorded, wanted = stored.record.details.get("recipe", {}), self.recipe.to_json()
        key = next((key for key in wanted if recorded.get(key) != wanted[key]), None)
        return None if key is None else f"{key} = {recorded.get(key)!r}, the spec asks for {wanted[key]!r}"

    def adaptor_weights_sha256(self) -> str | None:
        """SHA-256 of the chosen Adaptor's best checkpoint, or None while a candidate run is unfinished."""
        try:
            return read_record(self.chosen_run(), CheckpointKind.BEST).weights_sha256
        except (StepFailed, CheckpointError):
            return None

    def chosen_run(self) -> Path:
        """The run folder whose Adaptor this head uses: the pair's best finished run by `rank_by`."""
        outcomes = []
        for run in self.candidates:
            result = read_completed(self.runs_dir / run.name)
            if result is None:
                raise StepFailed(f"{self.runs_dir / run.name} has not finished training")
            outcomes.append(SweepOutcome(run, result, skipped=True))
        return self.runs_dir / rank_outcomes(outcomes, self.rank_by)[0].run.name

    def execute(self, scheduler: str) -> str:
        run = None if self.text is None else open_adaptor_run(self.chosen_run(), CheckpointKind.BEST, self.device)
        evaluation = self._evaluate(run)
        for evaluated in evaluation.runs:
            write_result(evaluated.record, self.folder, evaluated.arrays)
        stored = self.result()
        if stored is None:
            raise StepFailed(f"the evaluation wrote no result for {self.fraction:g}% seed {self.seed} "
                             f"into {self.folder}")
        return result_line(stored, self.task.metric)

    def _evaluate(self, run) -> DatasetEvaluation:
        spaces = [self.space]
        if self.task.kind is TaskKind.CLASSIFY:
            settings = ClassifySettings(head=self.task.head, fractions=(self.fraction,), seed=self.seed,
                                        n_resamples=self.task.resamples)
            task = LabelStructure.MULTICLASS if self.task.metric is Metric.ACCURACY else None
            return classify_dataset(self.cache, self.task.dataset, self.vision, run, spaces, settings, task,
                                    self.task.labels, device=self.device, protocol=self.task.protocol)
        unet = self.task.unet_width_divisor if self.task.uses_unet(self.vision) else None
        settings = SegmentSettings(fractions=(self.fraction,), seed=self.seed, n_resamples=self.task.resamples,
                                   recipe=self.recipe, unet_width_divisor=unet)
        return segment_dataset(self.cache, self.task.dataset, self.vision, run, spaces, settings, self.device,
                               protocol=self.task.protocol, keep_recipe=tuple(self.task.recipe_overrides()))


def find_result(folder: Path, task: TaskSpec, space: FeatureSpace, fraction: float, seed: int) -> StoredResult | None:
    """The result file under `folder` for the task's head, feature space, fraction and seed, if any."""
    if not folder.is_dir():
        return None
    try:
        stored = read_results(folder)
    except ResultError:
        return None
    evaluation_task = EvaluationTask.CLASSIFY if task.kind is TaskKind.CLASSIFY else EvaluationTask.SEGMENT
    method = task.head.value if task.kind is TaskKind.CLASSIFY else DECODER_METHOD
    return next((entry for entry in stored if entry.record.task is evaluation_task
                 and entry.record.feature_space is space and entry.record.method == method
                 and entry.record.data_pct == fraction and entry.record.seed == seed
                 and entry.record.context.dataset == task.dataset), None)


def result_line(stored: StoredResult, metric: Metric) -> str:
    """One result in a line: its metric with the interval, or why the head was not trained."""
    record = stored.record
    if record.skipped:
        return f"not trained: {record.skipped}"
    return f"{metric.value} {format_interval(record.metrics.get(metric.result_key))} ({stored.path.name})"


def describe_weights(name: str) -> str:
    """Which weights a backbone needs and whether this machine has them."""
    try:
        spec = get_spec(name)
    except UnknownBackbone as error:
        return str(error)
    if spec.is_random_init:
        return f"{name}: none to fetch (seeded random initialisation, {spec.weights_id})"
    where = weights_origin(spec)
    here = "on this machine" if _weights_problem(spec) is None else "not on this machine"
    return f"{name}: {spec.weights_id}, {where} ({here})"


def backbone_problem(name: str, modality: Modality) -> str | None:
    """Why a store of this backbone cannot be extracted here (unknown, other modality, no weights), or None."""
    try:
        spec = get_spec(name)
    except UnknownBackbone as error:
        return f"{error}; add it to the registry or change the spec"
    if spec.modality is not modality:
        return f"backbone {name!r} is a {spec.modality.value} backbone, listed as a {modality.value} one"
    return _weights_problem(spec)


def _weights_problem(spec: BackboneSpec) -> str | None:
    try:
        if spec.modality is Modality.TEXT:
            locate_tokenizer(spec)
        if not spec.is_random_init:
            locate_weights(spec)
    except MissingWeights as error:
        return str(error)
    return None


def _best_epoch(result: TrainResult) -> str:
    """A finished run's best epoch and its validation recall, as a step's account states them."""
    recall = result.best_metrics["val_recall@5"]
    return f"best epoch {result.best_epoch} of {result.epochs_run}, val recall@5 {recall:.3f}"


def _recorded_recipe(run_dir: Path, kind: CheckpointKind) -> dict | None:
    """The recipe a run folder's checkpoint of `kind` records, or None when there is none."""
    if not checkpoint_paths(run_dir, kind).record.is_file():
        return None
    try:
        return dict(read_record(run_dir, kind).record.recipe)
    except CheckpointError:
        return None
