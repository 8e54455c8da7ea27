"""A study spec: the TOML file that says what a whole study is, read and checked into a `StudySpec`.

The schema (README, "Study specs", documents it key by key): `[study]` (name, cache, out,
device), `[pretraining]` (the image-text dataset the Adaptors train on), `[backbones]` (image and
text backbones, crossed; per protocol, text rows that read another text entry's Adaptors), `[extract]`
(how the backbones run), `[adaptor]` (the recipe, fixed overrides, an optional grid), `[datasets.NAME]`
(downstream dataset trees), `[tasks.NAME]` (one downstream task each: dataset, kind, metric, head,
fractions, seeds, cells left out and why) and, optionally, `[published]` (the published values to compare
with, their source, and the other published methods). Relative paths are relative to the working
directory, as on the command line.

Every error names the file and the key (`tasks.siim-segmentation.metric: ...`) and what would fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import tomllib

from adaptor_vlp.evaluate.heads import HeadKind
from adaptor_vlp.evaluate.protocol_heads import segmentation_recipe
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, SegmentationProtocol
from adaptor_vlp.evaluate.unet_decoder import width_divisor_problem
from adaptor_vlp.extract.datasets.mimic_cxr import SectionParser
from adaptor_vlp.extract.datasets.registry import ManifestDataset
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.protocols import (
    BUILTIN_PROTOCOLS,
    PUBLISHED_PROTOCOL,
    HeadTask,
    Protocol,
    ProtocolError,
    TaskProtocol,
    load_protocol,
)
from adaptor_vlp.train.recipe import RECIPES, RecipeError, RecipeName, Selection
from adaptor_vlp.train.sweep import BACKBONE_KEYS, GridError, expand_grid

Value = TypeVar("Value")


class SpecError(ValueError):
    """A study spec cannot be read, lacks a key, or holds a value that does not fit; the message names the key."""


class TaskKind(str, Enum):
    """What a downstream task trains on the frozen features: a classification head or a segmentation decoder."""

    CLASSIFY = "classify"
    SEGMENT = "segment"


class Metric(str, Enum):
    """A task's reported metric, and the metric of `evaluate`'s result files it reads."""

    AUROC = "auroc"
    ACCURACY = "accuracy"
    DICE_POSITIVE = "dice-positive"
    DICE_ALL = "dice-all"
    DICE_PUBLISHED = "dice-published"

    @property
    def result_key(self) -> str:
        return _RESULT_KEYS[self]

    @property
    def kind(self) -> TaskKind:
        return TaskKind.CLASSIFY if self in (Metric.AUROC, Metric.ACCURACY) else TaskKind.SEGMENT

    @property
    def title(self) -> str:
        return _METRIC_TITLES[self]


_RESULT_KEYS = {Metric.AUROC: "macro_auroc", Metric.ACCURACY: "accuracy", Metric.DICE_POSITIVE: "dice_positive",
                Metric.DICE_ALL: "dice_all", Metric.DICE_PUBLISHED: "dice_published"}
_METRIC_TITLES = {
    Metric.AUROC: "AUROC (macro over labels)",
    Metric.ACCURACY: "accuracy",
    Metric.DICE_POSITIVE: "Dice over images with a finding",
    Metric.DICE_ALL: "Dice over images where it is defined (empty-on-empty left out)",
    Metric.DICE_PUBLISHED: "Dice as the published code computes it (an empty mask predicted empty scores 1)",
}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset tree to read into the cache: its cache name, public layout, root, and (MIMIC-CXR) reports folder.

    With `protocol`, the manifest is split as that protocol splits the dataset for tasks of `protocol_kind`
    (`adaptor extract manifest --protocol`); the study derives one such dataset per task protocol.

    MIMIC-CXR only: `merge_validate_test` puts the official test split into validate (the
    paper's validation set), `section_parser` says how reports are cut into sections.
    """

    name: str
    layout: ManifestDataset
    root: Path
    reports: Path | None = None
    protocol: Protocol | None = None
    protocol_kind: TaskKind | None = None
    protocol_fractions: tuple[float, ...] = ()
    """The training percentages whose subsets the protocol draws when it writes the manifest."""
    merge_validate_test: bool = False
    section_parser: SectionParser = SectionParser.ADAPTOR

    def reader_options(self) -> dict[str, Any]:
        """The options the manifest reader records that the spec decides (compared with an existing manifest)."""
        if self.layout is not ManifestDataset.MIMIC_CXR:
            return {}
        options: dict[str, Any] = {"merge_validate_test": self.merge_validate_test}
        if self.section_parser is not SectionParser.ADAPTOR:
            options["section_parser"] = self.section_parser.value
        return options

    def reader_keywords(self) -> dict[str, Any]:
        """The keywords the layout's reader runs with: the reports folder and the options the spec decides."""
        keywords: dict[str, Any] = {} if self.reports is None else {"reports_root": self.reports.resolve()}
        if self.layout is ManifestDataset.MIMIC_CXR:
            keywords.update(merge_validate_test=self.merge_validate_test, section_parser=self.section_parser)
        return keywords


@dataclass(frozen=True)
class ExtractSettings:
    """How the frozen backbones run (the options of `adaptor extract images|texts`)."""

    device: str = "auto"
    precision: Precision = Precision.AUTO
    batch_size: int = 32
    workers: int = 2


@dataclass(frozen=True)
class AdaptorSpec:
    """How each backbone pair's Adaptor trains: a named recipe, fixed overrides, and an optional grid of settings.

    With a grid every combination trains, and the downstream heads use each pair's best run by
    `rank_by` (validation loss or recall@5 at the run's best epoch).
    """

    recipe: RecipeName = RecipeName.PAPER
    settings: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, list[Any]] = field(default_factory=dict)
    rank_by: Selection | None = None

    def sweep_grid(self, vision: str, text: str) -> dict[str, list[Any]]:
        """The `train.sweep` grid of one backbone pair: the pair, the fixed settings, and the spec's grid."""
        return {"pair": [[vision, text]], **{name: [value] for name, value in self.settings.items()}, **self.grid}


@dataclass(frozen=True)
class LeftOut:
    """Cells of a task the study does not compute, for one image backbone, and why (shown in the report)."""

    image: str
    reason: str


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: a dataset, a head or decoder, the metric, the training fractions and the seeds."""

    name: str
    title: str
    dataset: str
    kind: TaskKind
    metric: Metric
    fractions: tuple[float, ...]
    seeds: tuple[int, ...]
    head: HeadKind = HeadKind.LINEAR
    labels: tuple[str, ...] | None = None
    resamples: int = 1000
    epochs: int | None = None
    decoder: DecoderName | None = None
    batch_size: int | None = None
    image_size: int | None = None
    """A segmentation task's own decoder epochs, decoder, batch size and input size (None: its protocol's, else the
    published SIIM run's; no input size without a protocol: the plain store): set where time matters more than
    the recipe (the demo), and recorded in each result."""
    views: int = 0
    """Augmented views of each training image a segmentation task's decoder cycles through, one per epoch
    (extracted once, one store each); 0 trains on the unwarped images. Needs an input size."""
    left_out: tuple[LeftOut, ...] = ()
    protocol: Protocol | None = None
    """The downstream protocol this task follows (its split, subsets, head recipe, seeds and headline metric)."""
    base: str = ""
    """The spec's task name this task was derived from, one per protocol (its published values are keyed by it)."""

    @property
    def spec_name(self) -> str:
        """The task's name in the spec file: `base` for a task derived per protocol, else its name."""
        return self.base or self.name

    @property
    def compared_with_published(self) -> bool:
        """Whether its cells sit beside published values: only under the published protocol (or no protocol)."""
        return self.protocol is None or self.protocol.name == PUBLISHED_PROTOCOL

    def protocol_task(self, layout: str) -> TaskProtocol | None:
        """The protocol's entry for this task on a dataset layout, or None without a protocol."""
        return self.protocol.task(layout, HeadTask(self.kind.value)) if self.protocol else None
    unet: tuple[str, ...] = ()
    """Image backbones this segmentation task decodes with the published ResNet-AE U-Net over their cached
    feature maps (the published code chose it for resnet-ae, segment.py:82-89); the others read patch tokens."""
    unet_width_divisor: int = 1
    """The U-Net's widths divided by this (1: the published model; more only for the CPU demo)."""

    def left_out_reason(self, image: str) -> str | None:
        """Why this task's cells of image backbone `image` are left out, or None when they are computed."""
        return next((entry.reason for entry in self.left_out if entry.image == image), None)

    def recipe_overrides(self) -> dict[str, Any]:
        """The decoder recipe's fields this task sets itself, over its protocol's (`SegmentationProtocol` names)."""
        given = {"max_epochs": self.epochs, "decoder": self.decoder, "batch_size": self.batch_size,
                 "image_size": self.image_size, "views": self.views or None}
        return {field_name: value for field_name, value in given.items() if value is not None}

    def decoder_recipe(self, layout: str) -> SegmentationProtocol:
        """The recipe this segmentation task's decoders train with on a dataset of `layout`: its protocol's (the
        published SIIM run's without one), its own settings over it (`evaluate.commands.segment_dataset` computes
        the same from the same values)."""
        overrides = self.recipe_overrides()
        base = replace(SegmentationProtocol(), **overrides)
        entry = self.protocol_task(layout)
        return base if entry is None else segmentation_recipe(entry, base, keep=tuple(overrides))

    def uses_unet(self, image: str) -> bool:
        """Whether this task segments image backbone `image` with the U-Net (over feature maps, not tokens)."""
        return self.kind is TaskKind.SEGMENT and image in self.unet


@dataclass(frozen=True)
class PublishedMethod:
    """Another published method's values per task (aligned with the task's fractions), for context."""

    name: str
    values: Mapping[str, tuple[float, ...]]
    trainable_parameters: int | None = None


@dataclass(frozen=True)
class Published:
    """Published values to compare with: per task, image backbone and text backbone, one per fraction (percent)."""

    source: str
    note: str
    values: Mapping[str, Mapping[str, Mapping[str, tuple[float, ...]]]]
    methods: tuple[PublishedMethod, ...] = ()
    task_notes: Mapping[str, str] = field(default_factory=dict)

    def value(self, task: TaskSpec, image: str, text: str, fraction: float) -> float | None:
        """The published value of one cell, or None when the source has none or the task follows another protocol."""
        if not task.compared_with_published:
            return None
        row = self.values.get(task.spec_name, {}).get(image, {}).get(text)
        return None if row is None else row[task.fractions.index(fraction)]


@dataclass(frozen=True)
class StudySpec:
    """A whole study: what to extract, which Adaptors to train, which downstream heads to fit, what to compare with."""

    path: Path
    name: str
    cache: Path
    out: Path
    device: str
    torch_threads: int | None
    pretraining: DatasetSpec
    image_backbones: tuple[str, ...]
    text_backbones: tuple[str, ...]
    views: int
    extract: ExtractSettings
    adaptor: AdaptorSpec
    datasets: Mapping[str, DatasetSpec]
    tasks: tuple[TaskSpec, ...]
    published: Published | None = None
    text_by_protocol: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per protocol name, text rows whose cells under that protocol read Adaptors trained on another text entry
    (`[backbones.text_by_protocol.NAME]`): in the paper's study, the embedding the published code made of a
    backbone where it differs from the entry the corrected protocol reads."""

    def text_entry(self, task: TaskSpec, row: str) -> str:
        """The text backbone whose Adaptors the cells of `row` in `task` read: the row's own entry unless the
        task's protocol names another for it."""
        protocol = None if task.protocol is None else task.protocol.name
        return self.text_by_protocol.get(protocol, {}).get(row, row)

    @property
    def trained_text_backbones(self) -> tuple[str, ...]:
        """Every text backbone the study extracts and trains Adaptors on: the rows, then the entries that
        protocols read instead of a row."""
        substitutes = [entry for rows in self.text_by_protocol.values() for entry in rows.values()]
        return tuple(dict.fromkeys((*self.text_backbones, *substitutes)))

    @property
    def runs_dir(self) -> Path:
        """Where the Adaptor run folders go."""
        return self.out / "runs"

    @property
    def results_dir(self) -> Path:
        """Where the downstream result files go, one folder per task and feature set."""
        return self.out / "results"

    def with_paths(self, cache: Path | None = None, out: Path | None = None) -> StudySpec:
        """The spec with its cache or output folder replaced (the command line's --cache and --out)."""
        return replace(self, cache=cache or self.cache, out=out or self.out)


def load_spec(path: Path) -> StudySpec:
    """Reads and checks a study spec; a SpecError names the file, the key and what would fit."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such study spec")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    root = _Table(document, "", str(path))
    study = root.table("study")
    pretraining = root.table("pretraining")
    backbones = root.table("backbones")
    spec = StudySpec(
        path=path,
        name=study.get("name", str),
        cache=Path(study.get("cache", str, "cache")),
        out=Path(study.get("out", str)),
        device=study.get("device", str, "auto"),
        torch_threads=study.get("torch_threads", int, None, check=_at_least(1)),
        pretraining=_pretraining(pretraining),
        views=pretraining.get("views", int, 0, check=_at_least(0)),
        image_backbones=_names(backbones, "image"),
        text_backbones=_names(backbones, "text"),
        extract=_extract(root.table("extract", required=False)),
        adaptor=_adaptor(root.table("adaptor", required=False)),
        datasets={name: _dataset(table, name) for name, table in root.table("datasets").tables()},
        tasks=(),
    )
    for table in (study, pretraining):
        table.finish()
    if spec.pretraining.name in spec.datasets:
        raise SpecError(f"{path}: datasets.{spec.pretraining.name}: has the pretraining dataset's cache name; "
                        "give it another name")
    tasks = tuple(task for name, table in root.table("tasks").tables() for task in _task(table, name, spec))
    if not tasks:
        raise SpecError(f"{path}: tasks: the study has no downstream task; add a [tasks.NAME] table")
    text_by_protocol = _text_by_protocol(backbones.table("text_by_protocol", required=False), spec, tasks)
    backbones.finish()
    published_table = root.table("published", required=False)
    published = _published(published_table, tasks, spec) if published_table.present else None
    root.finish()
    return replace(spec, tasks=tasks, published=published, datasets=_datasets_used(spec, tasks),
                   text_by_protocol=text_by_protocol)


def _datasets_used(spec: StudySpec, tasks: tuple[TaskSpec, ...]) -> dict[str, DatasetSpec]:
    """The spec's datasets a task without a protocol reads, and one dataset per protocol split the tasks follow."""
    datasets = {task.dataset: spec.datasets[task.dataset] for task in tasks if task.protocol is None}
    for task in tasks:
        if task.protocol is not None and task.dataset not in datasets:
            source = spec.datasets[_source_dataset(spec, task)]
            fractions = sorted({fraction for other in tasks if other.dataset == task.dataset
                                for fraction in other.fractions})
            datasets[task.dataset] = replace(source, name=task.dataset, protocol=task.protocol, protocol_kind=task.kind,
                                             protocol_fractions=tuple(fractions))
    return datasets


def _source_dataset(spec: StudySpec, task: TaskSpec) -> str:
    """The spec dataset whose protocol split a protocol task's derived dataset is."""
    kind = HeadTask(task.kind.value)
    return next(name for name, dataset in spec.datasets.items()
                if any(entry.dataset == dataset.layout.value and entry.kind is kind
                       for entry in task.protocol.tasks.values())
                and task.protocol.cache_dataset(dataset.layout.value, kind, prefix=name) == task.dataset)


class _Table:
    """One TOML table being read: typed lookups that name the key on error, and a check for unknown keys."""

    def __init__(self, values: Any, key: str, source: str, present: bool = True) -> None:
        if not isinstance(values, dict):
            raise SpecError(f"{source}: {key}: must be a table, got {_shown(values)}")
        self.values, self.key, self.source, self.present = values, key, source, present
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.key}.{key}" if self.key else key

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.source}: {self.name(key)}: {message}")

    def get(self, key: str, kind: type[Value], default: Any = ..., check: Callable[[Any], str | None] | None = None
            ) -> Value:
        """The value at `key`, of type `kind` (an int is also a float); `default` (when given) if absent."""
        self.used.add(key)
        if key not in self.values:
            if default is ...:
                raise self.error(key, "missing; this key is required")
            return default
        value = self.values[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {_kind_name(kind)}, got {_shown(value)}")
        problem = check(value) if check is not None else None
        if problem:
            raise self.error(key, problem)
        return value

    def choice(self, key: str, kind: type[Enum], default: Any = ...) -> Any:
        """The value at `key` as a member of enum `kind`, named by its value."""
        text = self.get(key, str, default if default is ... else default.value)
        try:
            return kind(text)
        except ValueError:
            raise self.error(key, f"{text!r} is not one of {', '.join(member.value for member in kind)}") from None

    def table(self, key: str, required: bool = True) -> _Table:
        """The sub-table at `key` (an empty one when absent and not required)."""
        self.used.add(key)
        if key not in self.values:
            if required:
                raise self.error(key, f"missing; add a [{self.name(key)}] table")
            return _Table({}, self.name(key), self.source, present=False)
        return _Table(self.values[key], self.name(key), self.source)

    def tables(self) -> list[tuple[str, _Table]]:
        """Every (key, sub-table) of this table, in file order."""
        self.used.update(self.values)
        return [(key, _Table(value, self.name(key), self.source)) for key, value in self.values.items()]

    def finish(self) -> None:
        """Refuses keys that were never read: a misspelt key would otherwise be ignored in silence."""
        unknown = [key for key in self.values if key not in self.used]
        if unknown:
            known = ", ".join(sorted(self.used)) or "none"
            raise self.error(unknown[0], f"unknown key (known here: {known})")


def _dataset(table: _Table, name: str) -> DatasetSpec:
    dataset = DatasetSpec(name, table.choice("layout", ManifestDataset), Path(table.get("root", str)))
    table.finish()
    return dataset


def _pretraining(table: _Table) -> DatasetSpec:
    """The image-text dataset: MIMIC-CXR-JPG with its reports (the only layout with report texts)."""
    reports = table.get("reports", str, None)
    return DatasetSpec(table.get("dataset", str, ManifestDataset.MIMIC_CXR.value), ManifestDataset.MIMIC_CXR,
                       Path(table.get("root", str)), None if reports is None else Path(reports),
                       merge_validate_test=table.get("merge_validate_test", bool, False),
                       section_parser=table.choice("section_parser", SectionParser, SectionParser.ADAPTOR))


def _names(table: _Table, key: str) -> tuple[str, ...]:
    names = table.get(key, list, check=_non_empty_list)
    if not all(isinstance(name, str) and name for name in names):
        raise table.error(key, f"must be a list of backbone names, got {_shown(names)}")
    if len(set(names)) != len(names):
        raise table.error(key, f"lists a backbone twice: {_shown(names)}")
    return tuple(names)


def _text_by_protocol(table: _Table, spec: StudySpec, tasks: tuple[TaskSpec, ...]) -> dict[str, dict[str, str]]:
    """`[backbones.text_by_protocol.NAME]`: row = entry, for protocols some task follows and rows of the study."""
    followed = list(dict.fromkeys(task.protocol.name for task in tasks if task.protocol is not None))
    by_protocol: dict[str, dict[str, str]] = {}
    for protocol, rows in table.tables():
        if protocol not in followed:
            raise table.error(protocol, f"no task follows protocol {protocol!r} "
                                        f"(the tasks follow: {', '.join(followed) or 'none'})")
        by_protocol[protocol] = {}
        for row in rows.values:
            _known(rows, row, spec.text_backbones, "text backbone")
            entry = rows.get(row, str, check=_non_empty_text)
            if entry in spec.text_backbones:
                raise rows.error(row, f"{entry!r} is a row of the study itself; name a text entry that is not one "
                                      "of [backbones] text")
            by_protocol[protocol][row] = entry
        rows.finish()
    return by_protocol


def _extract(table: _Table) -> ExtractSettings:
    settings = ExtractSettings(
        device=table.get("device", str, "auto"),
        precision=table.choice("precision", Precision, Precision.AUTO),
        batch_size=table.get("batch_size", int, 32, check=_at_least(1)),
        workers=table.get("workers", int, 2, check=_at_least(0)),
    )
    table.finish()
    return settings


def _adaptor(table: _Table) -> AdaptorSpec:
    settings_table, grid_table = table.table("settings", required=False), table.table("grid", required=False)
    rank_by = table.get("rank_by", str, None)
    adaptor = AdaptorSpec(
        recipe=table.choice("recipe", RecipeName, RecipeName.PAPER),
        settings=dict(settings_table.values),
        grid={key: value if isinstance(value, list) else [value] for key, value in grid_table.values.items()},
        rank_by=None if rank_by is None else _selection(table, rank_by),
    )
    table.finish()
    for key in adaptor.grid:
        if key in BACKBONE_KEYS:
            raise grid_table.error(key, "the study's [backbones] choose the pairs; remove it from the grid")
        if not adaptor.grid[key]:
            raise grid_table.error(key, "has no values")
    try:
        RECIPES[adaptor.recipe].with_overrides(adaptor.settings)
    except RecipeError as error:
        raise SpecError(f"{table.source}: adaptor.settings: {error}") from None
    try:
        expand_grid(adaptor.sweep_grid("image", "text"), adaptor.recipe, source=f"{table.source}: adaptor.grid")
    except GridError as error:
        raise SpecError(str(error)) from None
    return adaptor


def _selection(table: _Table, value: str) -> Selection:
    try:
        return Selection(value)
    except ValueError:
        raise table.error("rank_by", f"{value!r} is not one of {', '.join(s.value for s in Selection)}") from None


def _task(table: _Table, name: str, spec: StudySpec) -> tuple[TaskSpec, ...]:
    """The task, or with `protocols` one task per protocol (`NAME@PROTOCOL`), each reading its protocol's split."""
    protocols = table.get("protocols", list, None, check=_non_empty_list)
    if protocols is None:
        return (_plain_task(table, name, spec),)
    for key in ("metric", "head", "seeds"):
        if key in table.values:
            raise table.error(key, "the task's protocols decide its head, seeds and headline metric; remove it "
                                   "(max_seeds runs only each protocol's first seeds)")
    dataset = _dataset_name(table, spec)
    layout = spec.datasets[dataset].layout.value
    kind = table.choice("kind", TaskKind)
    loaded = [_protocol(table, entry) for entry in protocols]
    names = [protocol.name for protocol in loaded]
    if len(set(names)) != len(names):
        raise table.error("protocols", f"names a protocol twice: {names}")
    tasks = []
    for protocol in loaded:
        try:
            entry = protocol.task(layout, HeadTask(kind.value))
        except ProtocolError as error:
            raise table.error("protocols", str(error)) from None
        tasks.append(_plain_task(table, name, spec, protocol, entry))
    table.finish()
    return tuple(tasks)


def _protocol(table: _Table, entry: Any) -> Protocol:
    """A built-in protocol by name, or a protocol file relative to the spec's folder."""
    if not isinstance(entry, str) or not entry:
        raise table.error("protocols", f"must list protocol names or files, got {_shown(entry)}")
    try:
        if entry in BUILTIN_PROTOCOLS or not entry.endswith(".toml"):
            return load_protocol(entry)
        return load_protocol(Path(table.source).parent / entry)
    except ProtocolError as error:
        raise table.error("protocols", str(error)) from None


def _dataset_name(table: _Table, spec: StudySpec) -> str:
    dataset = table.get("dataset", str)
    if dataset not in spec.datasets:
        raise table.error("dataset", f"{dataset!r} is not a dataset of the study; add [datasets.{dataset}] "
                                     f"or use one of {', '.join(spec.datasets) or 'none'}")
    return dataset


def _plain_task(table: _Table, name: str, spec: StudySpec, protocol: Protocol | None = None,
                entry: TaskProtocol | None = None) -> TaskSpec:
    dataset = _dataset_name(table, spec)
    kind = table.choice("kind", TaskKind)
    if entry is not None:
        return _protocol_task(table, name, spec, dataset, kind, protocol, entry)
    metric = table.choice("metric", Metric)
    if metric.kind is not kind:
        fitting = ", ".join(member.value for member in Metric if member.kind is kind)
        raise table.error("metric", f"{metric.value!r} does not fit a {kind.value} task; use one of {fitting}")
    fractions = _fractions(table)
    seeds = table.get("seeds", list, [0], check=_non_empty_list)
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds) or len(set(seeds)) != len(seeds):
        raise table.error("seeds", f"must be distinct integers, got {_shown(seeds)}")
    labels = table.get("labels", list, None)
    if labels is not None and not (labels and all(isinstance(label, str) for label in labels)):
        raise table.error("labels", f"must be a non-empty list of label names, got {_shown(labels)}")
    head = table.choice("head", HeadKind, HeadKind.LINEAR) if kind is TaskKind.CLASSIFY else HeadKind.LINEAR
    task = TaskSpec(
        name=name,
        title=table.get("title", str, name),
        dataset=dataset,
        kind=kind,
        metric=metric,
        fractions=fractions,
        seeds=tuple(seeds),
        head=head,
        labels=None if labels is None else tuple(labels),
        resamples=table.get("resamples", int, 1000, check=_at_least(1)),
        left_out=_left_out(table, spec),
        **_decoder_settings(table, spec, kind),
    )
    table.finish()
    return task


def _protocol_task(table: _Table, name: str, spec: StudySpec, dataset: str, kind: TaskKind, protocol: Protocol,
                   entry: TaskProtocol) -> TaskSpec:
    """The task as `protocol` runs it: its split's dataset, its head, seeds and headline metric."""
    labels = table.get("labels", list, None)
    head = HeadKind.MLP if entry.head is not None and entry.head.architecture.value == "mlp" else HeadKind.LINEAR
    max_seeds = table.get("max_seeds", int, None, check=_at_least(1))
    return TaskSpec(
        name=f"{name}@{protocol.name}",
        title=f"{table.get('title', str, name)}, {protocol.name} protocol",
        dataset=protocol.cache_dataset(spec.datasets[dataset].layout.value, HeadTask(kind.value), prefix=dataset),
        kind=kind,
        metric=Metric(entry.metric.value),
        fractions=_fractions(table),
        seeds=entry.training.seeds[:max_seeds],
        head=head,
        labels=None if labels is None else tuple(labels),
        resamples=table.get("resamples", int, 1000, check=_at_least(1)),
        left_out=_left_out(table, spec),
        **_decoder_settings(table, spec, kind),
        protocol=protocol,
        base=name,
    )


def _decoder_settings(table: _Table, spec: StudySpec, kind: TaskKind) -> dict[str, Any]:
    """A segmentation task's decoder keys, as TaskSpec fields: `unet` and `unet_width_divisor`, and its own
    `epochs`, `decoder` and `batch_size` (None where absent: the protocol's). A classification task has none."""
    if kind is not TaskKind.SEGMENT:
        return {}
    unet, unet_width_divisor = _unet(table, spec)
    image_size = table.get("image_size", int, None, check=_at_least(14))
    views = table.get("views", int, 0, check=_at_least(0))
    if views and image_size is None and "protocols" not in table.values:
        raise table.error("views", "augmented views warp the whole image at the task's input size; set image_size "
                                   "(a protocol sets it for its tasks)")
    return {"unet": unet, "unet_width_divisor": unet_width_divisor,
            "epochs": table.get("epochs", int, None, check=_at_least(1)),
            "decoder": table.choice("decoder", DecoderName) if "decoder" in table.values else None,
            "batch_size": table.get("batch_size", int, None, check=_at_least(2)),
            "image_size": image_size, "views": views}


def _fractions(table: _Table) -> tuple[float, ...]:
    fractions = table.get("fractions", list, [1, 10, 100], check=_non_empty_list)
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 100
               for value in fractions) or len(set(fractions)) != len(fractions):
        raise table.error("fractions", f"must be distinct percentages in (0, 100], got {_shown(fractions)}")
    return tuple(float(value) for value in sorted(fractions))
def _unet(table: _Table, spec: StudySpec) -> tuple[tuple[str, ...], int]:
    """A segmentation task's `unet` backbones (each an image backbone of the study) and `unet_width_divisor`."""
    names = table.get("unet", list, [])
    unknown = [name for name in names if name not in spec.image_backbones]
    if unknown:
        raise table.error("unet", f"{_shown(unknown)} are not image backbones of the study "
                                  f"({', '.join(spec.image_backbones)})")
    divisor = table.get("unet_width_divisor", int, 1, check=width_divisor_problem)
    return tuple(names), divisor


def _left_out(table: _Table, spec: StudySpec) -> tuple[LeftOut, ...]:
    entries = table.get("left_out", list, [])
    left_out = []
    for index, entry in enumerate(entries):
        item = _Table(entry, f"{table.name('left_out')}[{index}]", table.source)
        image = item.get("image", str)
        if image not in spec.image_backbones:
            raise item.error("image", f"{image!r} is not one of the study's image backbones "
                                      f"({', '.join(spec.image_backbones)})")
        left_out.append(LeftOut(image, item.get("reason", str, check=_non_empty_text)))
        item.finish()
    return tuple(left_out)


def _published(table: _Table, tasks: tuple[TaskSpec, ...], spec: StudySpec) -> Published:
    by_name = {task.spec_name: task for task in tasks}
    values: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {}
    results = table.table("results", required=False)
    for task_name, per_image in results.tables():
        task = _known(results, task_name, by_name, "task")
        values[task_name] = {}
        for image, per_text in per_image.tables():
            _known(per_image, image, spec.image_backbones, "image backbone")
            values[task_name][image] = {}
            for text in per_text.values:
                _known(per_text, text, spec.text_backbones, "text backbone")
                values[task_name][image][text] = _published_row(per_text, text, task)
            per_text.finish()
        per_image.finish()
    methods = []
    for index, entry in enumerate(table.get("methods", list, [])):
        item = _Table(entry, f"{table.name('methods')}[{index}]", table.source)
        per_task = item.table("results")
        method_values = {}
        for task_name in per_task.values:
            method_values[task_name] = _published_row(per_task, task_name, _known(per_task, task_name, by_name, "task"))
        per_task.finish()
        methods.append(PublishedMethod(item.get("name", str), method_values,
                                       item.get("trainable_parameters", int, None, check=_at_least(1))))
        item.finish()
    notes = table.table("notes", required=False)
    task_notes = {name: notes.get(name, str) for name in notes.values if _known(notes, name, by_name, "task")}
    published = Published(table.get("source", str, check=_non_empty_text), table.get("note", str, ""), values,
                          tuple(methods), task_notes)
    table.finish()
    return published


def _known(table: _Table, key: str, known: Any, what: str) -> Any:
    if key not in known:
        raise table.error(key, f"not a {what} of the study (known: {', '.join(known)})")
    return known[key] if isinstance(known, Mapping) else key


def _published_row(table: _Table, key: str, task: TaskSpec) -> tuple[float, ...]:
    row = table.get(key, list)
    if len(row) != len(task.fractions) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) for value in row):
        raise table.error(key, f"must list {len(task.fractions)} numbers, one per fraction of task {task.name} "
                               f"({', '.join(f'{fraction:g}%' for fraction in task.fractions)}), got {_shown(row)}")
    return tuple(float(value) for value in row)


def _at_least(minimum: int) -> Callable[[int], str | None]:
    return lambda value: None if value >= minimum else f"must be at least {minimum}, got {value}"


def _non_empty_list(value: list) -> str | None:
    return None if value else "must not be empty"


def _non_empty_text(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}.get(
        kind, kind.__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


