"""Checks that a store is whole and trustworthy: complete, unchanged since written, consistent.

Every complete shard's marker records the size and SHA-256 of each array's object for that shard
(`store.ShardMarker`); `verify_store` recomputes them (or, `quick`, compares sizes only) and names
the store, array, shard and row range of any mismatch. Each problem says whether rewriting its
shard repairs it (`cache_schema.repair`), which is so for everything a shard's writer writes,
and not for the row metadata (ids, join ids, splits), written once when the store is created.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from adaptor_vlp.cache_schema.arrays import ShardSpan
from adaptor_vlp.cache_schema.layout import FEATURE_ARRAYS, PER_SHARD_ARRAYS, ArrayName, shard_key
from adaptor_vlp.cache_schema.lock import lock_path, read_holder
from adaptor_vlp.cache_schema.manifest import MANIFEST_CSV, MANIFEST_JSON, ManifestError, manifest_sha256
from adaptor_vlp.cache_schema.markers import ShardFile, ShardMarker
from adaptor_vlp.cache_schema.provenance import IncompleteProvenance
from adaptor_vlp.cache_schema.store import CacheStore, DamagedStore, StoreError

REBUILD = "the row metadata is written once, when the store is created: rebuild the store with --overwrite"


class ProblemKind(str, Enum):
    """What fixes a problem."""

    SHARD = "shard"
    """Rewriting the shard: `adaptor cache repair`, then the command that wrote the store."""
    INCOMPLETE = "incomplete"
    """Finishing the run: the command that wrote the store, again."""
    STORE = "store"
    """Neither: the store must be rebuilt (--overwrite) or its metadata put right."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store; `shard` is the shard to rewrite for kind SHARD."""

    message: str
    kind: ProblemKind = ProblemKind.STORE
    shard: int | None = None


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of verifying a store: ok only when there are no problems; notes do not fail it."""

    path: str
    findings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checksums: bool = True
    """Whether the content digests were recomputed (False with `quick`: sizes only)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def problems(self) -> list[str]:
        return [finding.message for finding in self.findings]

    @property
    def damaged_shards(self) -> list[int]:
        """Shards that a rewrite repairs, in order."""
        return sorted({f.shard for f in self.findings if f.kind is ProblemKind.SHARD and f.shard is not None})

    def of_kind(self, kind: ProblemKind) -> list[str]:
        """The messages of the problems of one kind."""
        return [finding.message for finding in self.findings if finding.kind is kind]


def verify_store(path: Path, quick: bool = False) -> VerifyReport:
    """Completeness, recorded sizes and digests, unique ids, masks matching failures, finite values, provenance.

    With `quick` the objects' sizes are compared with their markers but their bytes are not hashed.
    """
    path = Path(path)
    try:
        store = CacheStore.open(path)
    except (StoreError, IncompleteProvenance, KeyError, TypeError, ValueError) as error:
        return VerifyReport(str(path), [Problem(f"cannot open: {error}")], checksums=not quick)
    findings: list[Problem] = []
    notes = _lock_notes(path)
    markers = _markers(store, findings)
    incomplete = [span for span in store.shards() if span.index not in markers]
    if incomplete:
        listed = ", ".join(str(s.index) for s in incomplete[:10])
        findings.append(Problem(f"{len(incomplete)} of {len(store.shards())} shards incomplete (no marker): {listed}"
                                + (" ..." if len(incomplete) > 10 else "")
                                + "; rerun the command that wrote the store to resume", ProblemKind.INCOMPLETE))
    unrecorded = sorted(index for index, marker in markers.items() if marker.files is None)
    if unrecorded:
        notes.append(f"{len(unrecorded)} shards' markers predate checksums (written by an older version): their "
                     "content is not checked; re-extract with --overwrite to record them")
    findings += _file_findings(store, markers, quick)
    if any(finding.kind is ProblemKind.STORE for finding in findings):
        return VerifyReport(str(path), findings, notes, checksums=not quick)
    findings += _content_findings(store, markers, {f.shard for f in findings if f.shard is not None})
    return VerifyReport(str(path), findings, notes, checksums=not quick)


def verify_manifest(folder: Path) -> list[str]:
    """Problems of the manifest in `folder`: its CSV must still have the SHA-256 its JSON records."""
    try:
        recorded = json.loads((Path(folder) / MANIFEST_JSON).read_text(encoding="utf-8"))["manifest_sha256"]
        found = manifest_sha256(folder)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ManifestError) as error:
        return [f"cannot read the manifest: {error}"]
    if found != recorded:
        return [f"{MANIFEST_CSV} has SHA-256 {found[:12]}..., its {MANIFEST_JSON} records {recorded[:12]}...: the "
                "CSV changed since it was written; write the manifest again with `adaptor extract manifest`"]
    return []


def require_finite(store: CacheStore, rows: np.ndarray, *arrays: np.ndarray) -> None:
    """Refuses NaN or infinite values read from rows marked valid, naming how many rows and the first sample.

    Each array holds one entry per row (any trailing shape), in the order of `rows`.
    """
    finite = np.logical_and.reduce([np.isfinite(a).reshape(len(rows), -1).all(axis=1) for a in arrays])
    if not finite.all():
        sample = store.ids[rows[np.argmin(finite)]]
        raise StoreError(f"{store.path}: {int((~finite).sum())} rows marked valid hold NaN or infinite values, "
                         f"e.g. sample {sample}; run `adaptor cache verify` and re-extract")


def _shard_problem(message: str, shard: int | None) -> Problem:
    """A problem that rewriting `shard` fixes; with no shard to rewrite, one of the store."""
    return Problem(message, ProblemKind.STORE) if shard is None else Problem(message, ProblemKind.SHARD, shard)


def _where(span: ShardSpan, name: ArrayName | None = None) -> str:
    array = f", array '{name.value}'" if name is not None else ""
    return f"shard {span.index} (rows {span.start}-{span.stop - 1}){array}"


def _lock_notes(path: Path) -> list[str]:
    holder = read_holder(lock_path(path))
    if holder is None:
        return []
    return [f"{lock_path(path)} names a run writing this store ({holder.describe()}); if it still runs, its "
            "unfinished shards show as incomplete"]


def _markers(store: CacheStore, findings: list[Problem]) -> dict[int, ShardMarker]:
    """Every readable marker by shard; an unreadable or misplaced one is a problem of its shard."""
    spans = store.shards()
    markers = {}
    for index in sorted(store.complete_shard_indices()):
        try:
            marker = store.marker(index)
        except DamagedStore as error:
            findings.append(_shard_problem(str(error), index if index < len(spans) else None))
            continue
        if marker is None:  # removed since it was listed (a repair or an --overwrite run)
            continue
        if index >= len(spans) or (marker.index, marker.start, marker.stop) != (index, spans[index].start,
                                                                               spans[index].stop):
            findings.append(_shard_problem(f"{store.marker_path(index).name}: records shard {marker.index} rows "
                                           f"{marker.start}-{marker.stop - 1}, which is not this store's shard "
                                           f"{index}", index if index < len(spans) else None))
            continue
        markers[index] = marker
    return markers


def _file_findings(store: CacheStore, markers: dict[int, ShardMarker], quick: bool) -> list[Problem]:
    """Each complete shard's objects against their records: present, same size and (unless quick) same SHA-256."""
    expected = [(index, name, record) for index, marker in sorted(markers.items()) if marker.files is not None
                for name, record in marker.files.items()]
    measure = _sizes if quick else _digests
    found = measure(store.path, [shard_key(name, index) for index, name, _ in expected])
    findings = []
    spans = store.shards()
    for (index, name, record), actual in zip(expected, found):
        problem = _difference(record, actual, quick)
        if problem:
            rebuild = name not in PER_SHARD_ARRAYS
            findings.append(_shard_problem(f"{_where(spans[index], name)}: {shard_key(name, index)} {problem}"
                                           + (f"; {REBUILD}" if rebuild else ""), None if rebuild else index))
    return findings


def _difference(record: ShardFile | None, actual: ShardFile | None, quick: bool) -> str:
    if record is None and actual is None:
        return ""
    if actual is None:
        return "is missing"
    if record is None:
        return "exists though its marker records that none was written"
    if actual.bytes != record.bytes:
        return f"holds {actual.bytes} bytes where its marker records {record.bytes} (truncated or overwritten)"
    if not quick and actual.sha256 != record.sha256:
        return (f"content changed since its marker was written (SHA-256 {actual.sha256[:12]}... where the marker "
                f"records {record.sha256[:12]}...)")
    return ""


def _digests(store: Path, keys: list[str]) -> list[ShardFile | None]:
    """Each object's size and SHA-256, hashed on every core (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda key: ShardFile.of(store, key), keys))


def _sizes(store: Path, keys: list[str]) -> list[ShardFile | None]:
    return [ShardFile(key, (store / key).stat().st_size, "") if (store / key).is_file() else None for key in keys]


def _content_findings(store: CacheStore, markers: dict[int, ShardMarker], damaged: set[int]) -> list[Problem]:
    """Unique ids; per complete, undamaged shard: the mask matches the recorded failures, valid rows are finite."""
    findings = []
    try:
        ids = store.ids
    except DamagedStore as error:
        return [Problem(f"{error}; {REBUILD}")]
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    if repeated:
        findings.append(Problem(f"ids not unique: {repeated[:5]}; {REBUILD}"))
    for span in store.shards():
        if span.index not in markers or span.index in damaged:
            continue
        try:
            rows_valid = store.read(ArrayName.VALID, span.rows)
        except StoreError as error:
            findings.append(_shard_problem(f"{_where(span, ArrayName.VALID)}: unreadable ({error})", span.index))
            continue
        masked = set(ids[span.rows][~rows_valid])
        recorded = {failure.id for failure in markers[span.index].failures}
        if masked != recorded:
            findings.append(_shard_problem(f"{_where(span)}: rows masked invalid {sorted(masked)[:5]} do not match "
                                           f"the recorded failures {sorted(recorded)[:5]}", span.index))
        for name in FEATURE_ARRAYS:
            if not store.has(name):
                continue
            try:
                values = store.read(name, span.rows)
            except StoreError as error:
                findings.append(_shard_problem(f"{_where(span, name)}: unreadable ({error})", span.index))
                continue
            row_values = values[rows_valid]
            bad = ~np.isfinite(row_values.reshape(len(row_values), int(np.prod(values.shape[1:])))).all(axis=1)
            if bad.any():
                first = ids[span.rows][rows_valid][bad][:5]
                findings.append(_shard_problem(f"{_where(span, name)}: non-finite values in valid rows, e.g. ids "
                                               f"{list(first)}", span.index))
    return findings
