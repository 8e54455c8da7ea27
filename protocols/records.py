"""What a downstream protocol is, as data: the records a protocol file becomes and the choices they are made of.

A protocol fixes, per dataset and task, how the dataset is split, how the 1% / 10% training subsets
are drawn, the head and how it is trained, and the metric the table reports. Every value carries a
note (the published file and line it comes from, or why it differs); `adaptor_vlp.protocols.loader`
reads the files and checks them, this module only defines the records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping


class ProtocolError(ValueError):
    """A protocol file or entry that cannot be used; the message names the file and the key."""


class HeadTask(str, Enum):
    """What the head does: classify images, or segment them."""

    CLASSIFY = "classify"
    SEGMENT = "segment"


class SplitRule(str, Enum):
    """How a dataset's rows become train / validate / test."""

    MGCA_TWO_STAGE = "mgca-two-stage"
    """MGCA's preprocess: `train_test_split(frame, test_size=held_out, random_state=seed)`, then the held-out
    part `train_test_split(..., test_size=0.5, random_state=seed)` into (test, validate), in that order."""
    MGCA_TRAIN_VALIDATE = "mgca-train-validate"
    """MGCA's COVIDx preprocess: `train_test_split(train list, train_size=train_share, random_state=seed)` into
    (train, validate); the official test list is the test split."""
    PATIENT_GROUPS = "patient-groups"
    """Ours: the sorted patients shuffled by `numpy.random.default_rng(seed)` and cut by the validate and test
    shares, so no patient (and no image) is in two splits; test 0 keeps an official test list."""


class SplitUnit(str, Enum):
    """What one row of the frame that is split stands for."""

    PATIENT = "patient"
    """One row per patient (RSNA's label rows grouped by patientId, in sorted patientId order)."""
    LABEL_ROW = "label-row"
    """One row per row of the label table: an image with several rows can land in several splits (SIIM)."""
    LIST_ROW = "list-row"
    """One row per line of a list file (COVIDx's train list)."""


class TrainingBalance(str, Enum):
    """Which training images a segmentation head sees."""

    ALL = "all"
    BALANCED = "balanced"
    """Every positive image and as many negative images, drawn by NumPy's global generator
    (MGCA's SIIMImageDataset); the negatives not drawn are in no split."""


class SubsetRule(str, Enum):
    """How the 1% and 10% training subsets are drawn."""

    PANDAS_SAMPLE = "pandas-sample"
    """`DataFrame.sample(frac=pct / 100, random_state=seed)` of the training frame in its split order."""
    NUMPY_CHOICE = "numpy-choice"
    """`np.random.choice(training ids, int(n * pct / 100), replace=False)` from NumPy's global generator, seeded
    `seed` before the training split's own draws (MGCA's segmentation datasets)."""
    NESTED_SEEDED = "nested-seeded"
    """Ours: a seeded subset per run seed, each smaller fraction inside the larger (`train.batches.choose_subset`)."""


class HeadArchitecture(str, Enum):
    """The head on the frozen features."""

    MLP = "mlp"
    """The published SSLEvaluator: Dropout, Linear(D, hidden, no bias), BatchNorm1d, ReLU, Dropout, Linear."""
    LINEAR = "linear"
    """A logistic-regression probe on standardised features (ours; not the published head)."""


class Optimiser(str, Enum):
    ADAMW = "adamw"


class Schedule(str, Enum):
    """The learning-rate schedule of a head."""

    CONSTANT = "constant"
    COSINE_WARM_RESTARTS_PER_EPOCH = "cosine-warm-restarts-per-epoch"
    """`CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min)` stepped once per epoch (Lightning's default
    interval when `configure_optimizers` returns no interval), T_0 counted in those epoch steps."""


class Selection(str, Enum):
    """Which epoch's weights are tested, and what early stopping watches."""

    VALIDATION_METRIC = "validation-metric"
    """The epoch with the highest validation metric (Lightning ModelCheckpoint / EarlyStopping, mode max)."""
    VALIDATION_LOSS = "validation-loss"
    """The epoch with the lowest validation loss."""


class Metric(str, Enum):
    """What a table reports (the study spec's names)."""

    AUROC = "auroc"
    ACCURACY = "accuracy"
    DICE_PUBLISHED = "dice-published"
    DICE_POSITIVE = "dice-positive"


Notes = Mapping[str, str]
"""Per value key, where the value comes from (published file and line) or why it differs."""


@dataclass(frozen=True)
class SplitSpec:
    """How the dataset is split; which of the numbers apply depends on the rule (the loader checks)."""

    rule: SplitRule
    unit: SplitUnit
    seed: int
    held_out: float | int | None = None
    """MGCA_TWO_STAGE: sklearn's `test_size` of the first split (a fraction, or a count of rows)."""
    train_share: float | None = None
    """MGCA_TRAIN_VALIDATE: sklearn's `train_size`."""
    validate: float | None = None
    """PATIENT_GROUPS: the validation share."""
    test: float | None = None
    """PATIENT_GROUPS: the test share (0: the dataset's official test list)."""
    balance: TrainingBalance = TrainingBalance.ALL
    balance_seed: int | None = None
    """The seed NumPy's global generator holds when the balanced draw runs."""
    notes: Notes = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The split's values without notes: what a manifest records and two tasks compare to share one."""
        return {"rule": self.rule.value, "unit": self.unit.value, "seed": self.seed, "held_out": self.held_out,
                "train_share": self.train_share, "validate": self.validate, "test": self.test,
                "balance": self.balance.value, "balance_seed": self.balance_seed}


@dataclass(frozen=True)
class SubsetSpec:
    """How the training subsets are drawn."""

    rule: SubsetRule
    seed: int | None
    """The draw's seed; None for NESTED_SEEDED, which takes each run's seed."""
    notes: Notes = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class HeadSpec:
    """The classification head's architecture."""

    architecture: HeadArchitecture
    hidden: int | None
    dropout: float
    notes: Notes = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TrainingRecipe:
    """How a head is trained: optimiser, batch, epochs, schedule, early stopping, selection and seeds.

    `batch_size` is the number of samples per optimiser step on one device; `devices` processes each
    took a batch of that size per step (DDP), so one step saw `batch_size * devices` samples.
    """

    optimiser: Optimiser
    learning_rate: float
    weight_decay: float
    batch_size: int
    devices: int
    epochs: int
    schedule: Schedule
    t0_fraction: float | None
    """T_0 = int(t0_fraction * ceil(n_train / batch_size) * epochs), the published finetuner's formula."""
    t0_epochs: int | None
    """A fixed T_0 (the published segmenter's 100)."""
    eta_min: float
    validate_every: int
    """Epochs between validations; patience counts validations."""
    patience: int
    min_delta: float
    selection: Selection
    seeds: tuple[int, ...]
    batch_size_at: Mapping[float, int] = field(default_factory=dict)
    """Per training fraction (percent), a batch size that replaces `batch_size` there."""
    notes: Notes = field(default_factory=dict, compare=False)

    def batch_for(self, data_pct: float) -> int:
        """The per-device batch size at a training fraction (percent)."""
        return self.batch_size_at.get(float(data_pct), self.batch_size)

    def step_batch(self, data_pct: float) -> int:
        """The samples one optimiser step averages over, across devices, at a training fraction."""
        return self.batch_for(data_pct) * self.devices

    def t0(self, n_train: int, data_pct: float) -> int:
        """The schedule's T_0 in its (epoch) steps for `n_train` training samples at a training fraction."""
        if self.t0_epochs is not None:
            return self.t0_epochs
        if self.t0_fraction is None:
            raise ProtocolError("a cosine schedule needs t0_fraction or t0_epochs")
        steps_per_epoch = -(-n_train // self.batch_for(data_pct))
        return int(self.t0_fraction * steps_per_epoch * self.epochs)


@dataclass(frozen=True)
class Fault:
    """A published fault this protocol keeps (published) or fixes (corrected), and how its size is measured."""

    key: str
    description: str
    measure: str


@dataclass(frozen=True)
class TaskProtocol:
    """One dataset and task under a protocol."""

    name: str
    dataset: str
    """The dataset layout the task reads (rsna, siim, covidx, ...)."""
    kind: HeadTask
    split: SplitSpec
    subset: SubsetSpec
    training: TrainingRecipe
    metric: Metric
    head: HeadSpec | None = None
    also_report: tuple[Metric, ...] = ()
    classes: tuple[str, ...] = ()
    """The class vocabulary a multi-class task expects (COVIDx: normal, pneumonia, COVID-19)."""
    segmentation: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Segmentation settings (decoder, loss, resolution, augmentation), passed through for the segment stage."""
    faults: tuple[str, ...] = ()
    """Keys of the protocol's faults that touch this task."""
    notes: Notes = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Protocol:
    """A named downstream protocol read from one file."""

    name: str
    title: str
    source: Path | str
    """The file it was read from (or 'built-in NAME')."""
    summary: str
    tasks: Mapping[str, TaskProtocol]
    faults: Mapping[str, Fault]

    def tasks_sharing_split(self, dataset: str, kind: HeadTask) -> tuple[TaskProtocol, ...]:
        """The task for (dataset, kind) and every other task on the dataset split the same way: one manifest."""
        split = self.task(dataset, kind).split.to_json()
        return tuple(task for task in self.tasks.values() if task.dataset == dataset and task.split.to_json() == split)

    def cache_dataset(self, dataset: str, kind: HeadTask, prefix: str | None = None) -> str:
        """The cache folder of the manifest this protocol writes for (dataset, kind): `<prefix>-<protocol>` (prefix:
        the dataset), with `-<kind>` added where the protocol splits the dataset differently for its tasks
        (published RSNA)."""
        tasks = [task for task in self.tasks.values() if task.dataset == dataset]
        shared = len(self.tasks_sharing_split(dataset, kind)) == len(tasks)
        name = f"{prefix or dataset}-{self.name}"
        return name if shared else f"{name}-{kind.value}"

    def task(self, dataset: str, kind: HeadTask) -> TaskProtocol:
        """The task protocol for a dataset layout and task kind; an error names what the file defines."""
        matches = [task for task in self.tasks.values() if task.dataset == dataset and task.kind is kind]
        if not matches:
            defined = sorted(f"{task.dataset}/{task.kind.value}" for task in self.tasks.values())
            raise ProtocolError(f"protocol {self.name!r} ({self.source}) defines no {kind.value} task for dataset "
                                f"{dataset!r}; it defines {defined}")
        return matches[0]
