"""Read protocol files: the built-in `published` and `corrected`, or a user's file given by path.

A protocol file holds a `[protocol]` table (name, title, summary), `[faults.KEY]` tables (description,
measure) and one `[tasks.NAME]` table per dataset and task with its `split`, `subset`, `head` (classification),
`training` and optional `segmentation` sub-tables. Every value of a task table and of its sub-tables carries a
note in the table's `notes` sub-table, keyed like the value: where it comes from in the published code, or
why it differs. A missing note, an unknown key, a wrong type or an unknown choice is one `ProtocolError` naming
the file and the dotted key.
"""
from __future__ import annotations

from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, TypeVar

import tomllib

from adaptor_vlp.protocols.records import (
    Fault,
    HeadArchitecture,
    HeadSpec,
    HeadTask,
    Metric,
    Optimiser,
    Protocol,
    ProtocolError,
    Schedule,
    Selection,
    SplitRule,
    SplitSpec,
    SplitUnit,
    SubsetRule,
    SubsetSpec,
    TaskProtocol,
    TrainingBalance,
    TrainingRecipe,
)

PUBLISHED_PROTOCOL = "published"
"""The protocol whose cells a study report puts beside the published values."""
BUILTIN_PROTOCOLS = (PUBLISHED_PROTOCOL, "corrected")
"""The protocols shipped inside the package, as `<name>.toml` beside this module."""
BUILTIN_ORIGIN = "built-in "
NOTES = "notes"

E = TypeVar("E", bound=Enum)


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A built-in protocol by name, or the protocol file at a path (anything ending in .toml or that exists)."""
    text = str(name_or_path)
    if text in BUILTIN_PROTOCOLS:
        return _builtin(text)
    path = Path(text)
    if not (path.suffix == ".toml" or path.exists()):
        raise ProtocolError(f"unknown protocol {text!r}: give a built-in name ({', '.join(BUILTIN_PROTOCOLS)}) "
                            "or the path of a protocol TOML file")
    if not path.is_file():
        raise ProtocolError(f"protocol file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ProtocolError(f"{path}: cannot read the protocol file: {error}") from None
    return parse_protocol(data, path)


@lru_cache(maxsize=None)
def _builtin(name: str) -> Protocol:
    text = resources.files("adaptor_vlp.protocols").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return parse_protocol(tomllib.loads(text), f"{BUILTIN_ORIGIN}{name}")


def parse_protocol(data: Mapping[str, Any], source: Path | str) -> Protocol:
    """The checked `Protocol` of a parsed TOML document; `source` names it in errors."""
    reader = _Reader(str(source))
    reader.only_keys(data, "", {"protocol", "faults", "tasks"})
    head = reader.table(data, "protocol")
    reader.only_keys(head, "protocol", {"name", "title", "summary"})
    faults_table = reader.table(data, "faults", required=False)
    faults = {key: _fault(reader, key, value) for key, value in faults_table.items()}
    tasks_table = reader.table(data, "tasks")
    if not tasks_table:
        raise ProtocolError(f"{source}: [tasks] defines no task")
    tasks = {name: _task(reader, name, value, faults) for name, value in tasks_table.items()}
    return Protocol(
        name=reader.string(head, "protocol.name"),
        title=reader.string(head, "protocol.title"),
        source=source,
        summary=reader.string(head, "protocol.summary"),
        tasks=tasks,
        faults=faults,
    )


def _fault(reader: "_Reader", key: str, table: Any) -> Fault:
    where = f"faults.{key}"
    table = reader.as_table(table, where)
    reader.only_keys(table, where, {"description", "measure"})
    return Fault(key, reader.string(table, f"{where}.description"), reader.string(table, f"{where}.measure"))


def _task(reader: "_Reader", name: str, table: Any, faults: Mapping[str, Fault]) -> TaskProtocol:
    where = f"tasks.{name}"
    table = reader.as_table(table, where)
    sub_tables = {"split", "subset", "head", "training", "segmentation"}
    values = {"dataset", "kind", "metric", "also_report", "classes", "faults"}
    reader.only_keys(table, where, sub_tables | values | {NOTES})
    notes = reader.notes(table, where, values)
    kind = reader.choice(table, f"{where}.kind", HeadTask)
    fault_keys = tuple(reader.strings(table, f"{where}.faults", required=False))
    unknown = [key for key in fault_keys if key not in faults]
    if unknown:
        raise ProtocolError(f"{reader.source}: {where}.faults names {unknown}, which [faults] does not define "
                            f"(it defines {sorted(faults)})")
    head = _head(reader, table, where) if kind is HeadTask.CLASSIFY else None
    split, subset = _split(reader, table, where), _subset(reader, table, where)
    if (subset.rule is SubsetRule.NUMPY_CHOICE and split.balance is TrainingBalance.BALANCED
            and subset.seed != split.balance_seed):
        raise ProtocolError(f"{reader.source}: {where}.subset.seed: a numpy-choice subset after a balanced split "
                            f"draws from the balancing's generator, so it must equal split.balance_seed "
                            f"({split.balance_seed}), got {subset.seed}")
    if kind is HeadTask.SEGMENT and "head" in table:
        raise ProtocolError(f"{reader.source}: {where}.head: a segmentation task's decoder belongs in "
                            f"{where}.segmentation, not in a classification head table")
    return TaskProtocol(
        name=name,
        dataset=reader.string(table, f"{where}.dataset"),
        kind=kind,
        split=split,
        subset=subset,
        training=_training(reader, table, where),
        metric=reader.choice(table, f"{where}.metric", Metric),
        head=head,
        also_report=tuple(Metric(value) for value in reader.strings(table, f"{where}.also_report", required=False,
                                                                    choices=Metric)),
        classes=tuple(reader.strings(table, f"{where}.classes", required=False)),
        segmentation=_segmentation(reader, table, where),
        faults=fault_keys,
        notes=notes,
    )


def _split(reader: "_Reader", task: Mapping[str, Any], task_where: str) -> SplitSpec:
    where = f"{task_where}.split"
    table = reader.table(task, "split", where=where)
    values = {"rule", "unit", "seed", "held_out", "train_share", "validate", "test", "balance", "balance_seed"}
    reader.only_keys(table, where, values | {NOTES})
    rule = reader.choice(table, f"{where}.rule", SplitRule)
    needed = {
        SplitRule.MGCA_TWO_STAGE: {"held_out"},
        SplitRule.MGCA_TRAIN_VALIDATE: {"train_share"},
        SplitRule.PATIENT_GROUPS: {"validate", "test"},
    }[rule]
    for key in {"held_out", "train_share", "validate", "test"}:
        if (key in table) != (key in needed):
            verb = "needs" if key in needed else "takes no"
            raise ProtocolError(f"{reader.source}: {where}: the {rule.value} rule {verb} {key!r}")
    notes = reader.notes(table, where, values)
    balance = reader.choice(table, f"{where}.balance", TrainingBalance, default=TrainingBalance.ALL)
    balance_seed = reader.integer(table, f"{where}.balance_seed", required=balance is TrainingBalance.BALANCED)
    return SplitSpec(
        rule=rule,
        unit=reader.choice(table, f"{where}.unit", SplitUnit),
        seed=reader.integer(table, f"{where}.seed"),
        held_out=reader.number(table, f"{where}.held_out", required=False),
        train_share=reader.fraction(table, f"{where}.train_share", required=False),
        validate=reader.fraction(table, f"{where}.validate", required=False),
        test=reader.fraction(table, f"{where}.test", required=False),
        balance=balance,
        balance_seed=balance_seed,
        notes=notes,
    )


def _subset(reader: "_Reader", task: Mapping[str, Any], task_where: str) -> SubsetSpec:
    where = f"{task_where}.subset"
    table = reader.table(task, "subset", where=where)
    values = {"rule", "seed"}
    reader.only_keys(table, where, values | {NOTES})
    notes = reader.notes(table, where, values)
    rule = reader.choice(table, f"{where}.rule", SubsetRule)
    seed = reader.integer(table, f"{where}.seed", required=rule is not SubsetRule.NESTED_SEEDED)
    if rule is SubsetRule.NESTED_SEEDED and seed is not None:
        raise ProtocolError(f"{reader.source}: {where}.seed: the nested-seeded rule takes each run's seed")
    return SubsetSpec(rule, seed, notes)


def _head(reader: "_Reader", task: Mapping[str, Any], task_where: str) -> HeadSpec:
    where = f"{task_where}.head"
    table = reader.table(task, "head", where=where)
    values = {"architecture", "hidden", "dropout"}
    reader.only_keys(table, where, values | {NOTES})
    notes = reader.notes(table, where, values)
    architecture = reader.choice(table, f"{where}.architecture", HeadArchitecture)
    hidden = reader.integer(table, f"{where}.hidden", required=architecture is HeadArchitecture.MLP, minimum=1)
    return HeadSpec(architecture, hidden, reader.fraction(table, f"{where}.dropout", upper_open=True), notes)


def _training(reader: "_Reader", task: Mapping[str, Any], task_where: str) -> TrainingRecipe:
    where = f"{task_where}.training"
    table = reader.table(task, "training", where=where)
    values = {"optimiser", "learning_rate", "weight_decay", "batch_size", "devices", "epochs", "schedule",
              "t0_fraction", "t0_epochs", "eta_min", "validate_every", "patience", "min_delta", "selection", "seeds",
              "batch_size_at"}
    reader.only_keys(table, where, values | {NOTES})
    notes = reader.notes(table, where, values)
    schedule = reader.choice(table, f"{where}.schedule", Schedule)
    t0_fraction = reader.number(table, f"{where}.t0_fraction", required=False)
    t0_epochs = reader.integer(table, f"{where}.t0_epochs", required=False, minimum=1)
    cosine = schedule is Schedule.COSINE_WARM_RESTARTS_PER_EPOCH
    if cosine and (t0_fraction is None) == (t0_epochs is None):
        raise ProtocolError(f"{reader.source}: {where}: a {schedule.value} schedule needs exactly one of "
                            "t0_fraction and t0_epochs")
    if not cosine and (t0_fraction is not None or t0_epochs is not None):
        raise ProtocolError(f"{reader.source}: {where}: a {schedule.value} schedule takes no T_0")
    seeds = tuple(reader.integers(table, f"{where}.seeds"))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ProtocolError(f"{reader.source}: {where}.seeds must list one or more distinct seeds, got {list(seeds)}")
    return TrainingRecipe(
        optimiser=reader.choice(table, f"{where}.optimiser", Optimiser),
        learning_rate=reader.positive(table, f"{where}.learning_rate"),
        weight_decay=reader.number(table, f"{where}.weight_decay", minimum=0.0),
        batch_size=reader.integer(table, f"{where}.batch_size", minimum=1),
        devices=reader.integer(table, f"{where}.devices", minimum=1),
        epochs=reader.integer(table, f"{where}.epochs", minimum=1),
        schedule=schedule,
        t0_fraction=t0_fraction,
        t0_epochs=t0_epochs,
        eta_min=reader.number(table, f"{where}.eta_min", required=cosine, minimum=0.0) or 0.0,
        validate_every=reader.integer(table, f"{where}.validate_every", minimum=1),
        patience=reader.integer(table, f"{where}.patience", minimum=1),
        min_delta=reader.number(table, f"{where}.min_delta", minimum=0.0),
        selection=reader.choice(table, f"{where}.selection", Selection),
        seeds=seeds,
        batch_size_at=_batch_sizes_at(reader, table, f"{where}.batch_size_at"),
        notes=notes,
    )


def _batch_sizes_at(reader: "_Reader", table: Mapping[str, Any], key: str) -> Mapping[float, int]:
    """`batch_size_at = { "1" = 128 }`: per training percentage, a batch size."""
    raw = reader.table(table, "batch_size_at", where=key, required=False)
    sizes = {}
    for pct in raw:
        try:
            fraction = float(pct)
        except ValueError:
            raise reader.fail(f"{key}.{pct}", "keys are training percentages such as \"1\" or \"10\"") from None
        if not 0 < fraction <= 100:
            raise reader.fail(f"{key}.{pct}", "a training percentage must be in (0, 100]")
        sizes[fraction] = reader.integer(raw, f"{key}.{pct}", minimum=1)
    return dict(sizes)


def _segmentation(reader: "_Reader", task: Mapping[str, Any], task_where: str) -> Mapping[str, Any]:
    """The segmentation settings as written (scalars and lists), each with its note; the segment stage reads them."""
    where = f"{task_where}.segmentation"
    table = reader.table(task, "segmentation", where=where, required=False)
    values = {key for key in table if key != NOTES}
    for key in values:
        value = table[key]
        if isinstance(value, dict):
            raise ProtocolError(f"{reader.source}: {where}.{key}: segmentation settings are scalars or lists, "
                                "not tables")
    reader.notes(table, where, values)
    return {key: table[key] for key in values}


class _Reader:
    """Typed reads from one file's tables; every error names the file and the dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ProtocolError:
        return ProtocolError(f"{self.source}: {key}: {message}")

    def as_table(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, got {type(value).__name__}")
        return value

    def table(self, parent: Mapping[str, Any], key: str, where: str | None = None,
              required: bool = True) -> Mapping[str, Any]:
        where = where or key
        if key not in parent:
            if required:
                raise self.fail(where, "missing table")
            return {}
        return self.as_table(parent[key], where)

    def only_keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where or "top level", f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")

    def notes(self, table: Mapping[str, Any], where: str, values: set[str]) -> Mapping[str, str]:
        """The table's notes; every value present needs one, and every note a value."""
        notes = self.table(table, NOTES, where=f"{where}.{NOTES}", required=False)
        present = {key for key in values if key in table}
        missing = sorted(present - set(notes))
        if missing:
            raise self.fail(f"{where}.{NOTES}", f"no note for {missing}: say which published file and line each "
                                                "value comes from, or why it differs")
        orphans = sorted(set(notes) - present)
        if orphans:
            raise self.fail(f"{where}.{NOTES}", f"notes for {orphans}, which the table does not set")
        for key, note in notes.items():
            if not isinstance(note, str) or not note.strip():
                raise self.fail(f"{where}.{NOTES}.{key}", "must be a non-empty string")
        return dict(notes)

    def _value(self, table: Mapping[str, Any], key: str, required: bool) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in table:
            if required:
                raise self.fail(key, "missing")
            return None
        return table[name]

    def string(self, table: Mapping[str, Any], key: str) -> str:
        value = self._value(table, key, True)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def choice(self, table: Mapping[str, Any], key: str, enum: type[E], default: E | None = None) -> E:
        value = self._value(table, key, default is None)
        if value is None:
            return default
        try:
            return enum(value)
        except ValueError:
            raise self.fail(key, f"{value!r} is not one of {[member.value for member in enum]}") from None

    def integer(self, table: Mapping[str, Any], key: str, required: bool = True, minimum: int | None = None
                ) -> int | None:
        value = self._value(table, key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            bound = f" of at least {minimum}" if minimum is not None else ""
            raise self.fail(key, f"must be an integer{bound}, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], key: str, required: bool = True, minimum: float | None = None
               ) -> float | int | None:
        value = self._value(table, key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (minimum is not None and value < minimum):
            bound = f" of at least {minimum}" if minimum is not None else ""
            raise self.fail(key, f"must be a number{bound}, got {value!r}")
        return value

    def positive(self, table: Mapping[str, Any], key: str) -> float:
        value = self.number(table, key)
        if value <= 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        return float(value)

    def fraction(self, table: Mapping[str, Any], key: str, required: bool = True, upper_open: bool = False
                 ) -> float | None:
        value = self.number(table, key, required)
        if value is None:
            return None
        if not (0 <= value < 1 if upper_open else 0 <= value <= 1):
            raise self.fail(key, f"must be a fraction in [0, 1{')' if upper_open else ']'}, got {value!r}")
        return float(value)

    def strings(self, table: Mapping[str, Any], key: str, required: bool = True,
                choices: type[Enum] | None = None) -> list[str]:
        value = self._value(table, key, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail(key, f"must be a list of non-empty strings, got {value!r}")
        if choices is not None:
            allowed = [member.value for member in choices]
            wrong = [item for item in value if item not in allowed]
            if wrong:
                raise self.fail(key, f"{wrong} are not among {allowed}")
        return value

    def integers(self, table: Mapping[str, Any], key: str) -> list[int]:
        value = self._value(table, key, True)
        if not isinstance(value, list) or not all(isinstance(item, int) and not isinstance(item, bool)
                                                  for item in value):
            raise self.fail(key, f"must be a list of integers, got {value!r}")
        return value
