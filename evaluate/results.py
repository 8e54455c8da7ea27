"""Result files: one JSON per evaluation run, saying what was measured, on which cache and Adaptor, how sure.

A run's file records the provenance of every store it read, the Adaptor checkpoint (path and
SHA-256 of its tensor file), the task, the data fraction and the training subset it drew, the seed,
and each metric with its bootstrap interval. Arrays a reader may want to look at rather than
read (test scores for ROC curves, a few masks for overlays, the chosen subset's ids) go in an
`.npz` file of the same name beside it, so the JSON stays small and the report and plots are
drawn later from files alone.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adaptor_vlp.cache_schema.provenance import code_version
from adaptor_vlp.cache_schema.writes import write_together, writing
from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval

RESULT_FORMAT = "adaptor-vlp/evaluation-result"
RESULT_FORMAT_VERSION = 1


class ResultError(ValueError):
    """A result file is missing, unreadable, or of another format."""


class EvaluationTask(str, Enum):
    """The downstream task a result measures."""

    CLASSIFY = "classify"
    ZEROSHOT = "zeroshot"
    RETRIEVAL = "retrieval"
    SEGMENT = "segment"


class FeatureSpace(str, Enum):
    """What a head sees: the frozen backbone's own output (the baseline) or the trained Adaptor's."""

    BACKBONE = "backbone"
    ADAPTOR = "adaptor"


@dataclass(frozen=True)
class RunContext:
    """What every result of one command shares: the dataset, the stores read and the Adaptor used.

    `provenance` maps a modality ("image", "text") to that store's provenance block; `adaptor`
    holds the run folder, checkpoint kind, tensor file and its SHA-256, or None without an Adaptor.
    """

    dataset: str
    provenance: Mapping[str, Any]
    adaptor: Mapping[str, Any] | None


@dataclass(frozen=True)
class ResultRecord:
    """One evaluation run: task, features, method, data fraction and subset, seed, metrics with CIs.

    `headline` names the metric the report tabulates. `skipped` says why no metric could be
    computed (e.g. a 1% subset in which every label takes one value); `metrics` is then empty.
    `details` holds counts and settings specific to the task (sizes of the splits, rows
    dropped and why, labels left out and why, the head's chosen hyper-parameters).
    """

    task: EvaluationTask
    context: RunContext
    feature_space: FeatureSpace
    method: str
    split: str
    data_pct: float | None
    subset: Mapping[str, Any] | None
    seed: int
    headline: str
    metrics: Mapping[str, ConfidenceInterval]
    details: Mapping[str, Any]
    skipped: str | None = None
    code_version: str = field(default_factory=code_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def name(self) -> str:
        """The file stem: task, features, method, fraction and seed, e.g. 'classify-adaptor-linear-10pct-seed0'."""
        fraction = "" if self.data_pct is None else f"-{self.data_pct:g}pct"
        return f"{self.task.value}-{self.feature_space.value}-{self.method}{fraction}-seed{self.seed}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; NaN values become null so that any JSON reader accepts the file."""
        return _without_nan({
            "format": RESULT_FORMAT,
            "format_version": RESULT_FORMAT_VERSION,
            "task": self.task.value,
            "dataset": self.context.dataset,
            "provenance": dict(self.context.provenance),
            "adaptor": None if self.context.adaptor is None else dict(self.context.adaptor),
            "feature_space": self.feature_space.value,
            "method": self.method,
            "split": self.split,
            "data_pct": self.data_pct,
            "subset": None if self.subset is None else dict(self.subset),
            "seed": self.seed,
            "headline": self.headline,
            "metrics": {name: _interval_json(interval) for name, interval in self.metrics.items()},
            "details": dict(self.details),
            "skipped": self.skipped,
            "code_version": self.code_version,
            "created": self.created,
        })

    @classmethod
    def from_json(cls, document: Mapping[str, Any], source: str = "result") -> "ResultRecord":
        """Reads back what `to_json` wrote, naming `source` when the document is of another format."""
        if document.get("format") != RESULT_FORMAT or document.get("format_version") != RESULT_FORMAT_VERSION:
            raise ResultError(f"{source}: not an adaptor-vlp evaluation result of format version "
                              f"{RESULT_FORMAT_VERSION} (found {document.get('format')!r} "
                              f"version {document.get('format_version')!r})")
        try:
            return cls(
                task=EvaluationTask(document["task"]),
                context=RunContext(document["dataset"], document["provenance"], document["adaptor"]),
                feature_space=FeatureSpace(document["feature_space"]),
                method=document["method"],
                split=document["split"],
                data_pct=document["data_pct"],
                subset=document["subset"],
                seed=document["seed"],
                headline=document["headline"],
                metrics={name: _interval_from_json(values) for name, values in document["metrics"].items()},
                details=document["details"],
                skipped=document["skipped"],
                code_version=document["code_version"],
                created=document["created"],
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ResultError(f"{source}: malformed result ({error!r}); evaluate again to rewrite it") from None


@dataclass(frozen=True)
class EvaluatedRun:
    """A result just computed and the arrays to save beside it (test ids, targets, scores, subset ids, masks)."""

    record: ResultRecord
    arrays: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StoredResult:
    """A result read back from disk, with where its JSON lies."""

    record: ResultRecord
    path: Path

    @property
    def arrays_path(self) -> Path:
        return self.path.with_suffix(".npz")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved beside the JSON (empty when none were saved)."""
        if not self.arrays_path.is_file():
            return {}
        with np.load(self.arrays_path, allow_pickle=False) as saved:
            return {name: saved[name] for name in saved.files}


def write_result(record: ResultRecord, out_dir: Path, arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Writes `OUT/<dataset>/<name>.json` (and `<name>.npz` with `arrays`) atomically; returns the JSON path.

    A rerun with the same task, features, method, fraction and seed replaces the earlier file. A
    failed write (a full disk) raises WriteFailed naming the file and leaves the earlier one whole.
    """
    folder = Path(out_dir) / record.context.dataset
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{record.name}.json"
    npz_path = json_path.with_suffix(".npz")
    files = {json_path: (json.dumps(record.to_json(), indent=1, allow_nan=False) + "\n").encode("utf-8")}
    if arrays:
        saved = io.BytesIO()
        np.savez_compressed(saved, **{name: np.asarray(value) for name, value in arrays.items()})
        files = {npz_path: saved.getvalue(), **files}
    elif npz_path.exists():
        npz_path.unlink()
    write_together(files)
    return json_path


def read_results(out_dir: Path) -> list[StoredResult]:
    """Every result under `out_dir`, ordered by dataset, task, method, features, fraction and seed."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ResultError(f"{out_dir}: no results folder here; run `adaptor evaluate classify|zeroshot|retrieval|"
                          "segment` with --out pointing at it first")
    stored = []
    for path in sorted(out_dir.glob("*/*.json")):
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ResultError(f"{path}: not valid JSON ({error}); evaluate again to rewrite it") from None
        stored.append(StoredResult(ResultRecord.from_json(document, str(path)), path))
    return sorted(stored, key=_order)


def _order(stored: StoredResult) -> tuple:
    record = stored.record
    return (record.context.dataset, record.task.value, record.method, record.feature_space.value,
            -1.0 if record.data_pct is None else record.data_pct, record.seed)


def _interval_json(interval: ConfidenceInterval) -> dict[str, Any]:
    return {"point": interval.point, "low": interval.low, "high": interval.high, "confidence": interval.confidence,
            "n_resamples": interval.n_resamples, "n_undefined": interval.n_undefined}


def _interval_from_json(values: Mapping[str, Any]) -> ConfidenceInterval:
    def number(name: str) -> float:
        return math.nan if values[name] is None else float(values[name])

    return ConfidenceInterval(point=number("point"), low=number("low"), high=number("high"),
                              confidence=float(values["confidence"]), n_resamples=int(values["n_resamples"]),
                              n_undefined=int(values["n_undefined"]))


def _without_nan(value: Any) -> Any:
    """The value with every NaN float replaced by None, recursively through dicts and lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    return value
