"""Checks that a store is whole and trustworthy, and summarises it for people and machines."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptor_vlp.cache_schema.layout import MARKER_FOLDER, ArrayName
from adaptor_vlp.cache_schema.provenance import IncompleteProvenance
from adaptor_vlp.cache_schema.store import CacheStore, StoreError


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of verifying a store: ok only when problems is empty."""

    path: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: Path) -> VerifyReport:
    """Completeness, unique ids, finite embeddings in valid rows, masks matching failures, full provenance."""
    try:
        store = CacheStore.open(path)
    except (StoreError, IncompleteProvenance, KeyError, TypeError) as error:
        return VerifyReport(str(path), [f"cannot open: {error}"])
    problems: list[str] = []
    incomplete = store.incomplete_shards()
    if incomplete:
        listed = ", ".join(str(s.index) for s in incomplete[:10])
        problems.append(f"{len(incomplete)} of {len(store.shards())} shards incomplete (no marker): {listed}"
                        + (" ..." if len(incomplete) > 10 else "") + "; rerun the extract command to resume")
    repeated = [i for i, count in Counter(store.ids).items() if count > 1]
    if repeated:
        problems.append(f"ids not unique: {repeated[:5]}")
    valid = store.valid
    failed_ids = {f.id for f in store.failures()}
    ids = store.ids
    complete = store.complete_shard_indices()
    for span in store.shards():
        if span.index not in complete:
            continue
        rows_valid = valid[span.rows]
        masked = set(ids[span.rows][~rows_valid])
        recorded = failed_ids.intersection(ids[span.rows])
        if masked != recorded:
            problems.append(f"shard {span.index}: rows masked invalid {sorted(masked)[:5]} do not match "
                            f"the recorded failures {sorted(recorded)[:5]}")
        for name in (ArrayName.EMBEDDING, ArrayName.TOKENS, ArrayName.VIEWS):
            if not store.has(name):
                continue
            try:
                values = store.read(name, span.rows)
            except Exception as error:  # a corrupted shard object surfaces as a codec or index error
                problems.append(f"shard {span.index}: '{name.value}' unreadable ({type(error).__name__}: {error})")
                continue
            bad = ~np.isfinite(values[rows_valid]).reshape(int(rows_valid.sum()), -1).all(axis=1)
            if bad.any():
                first = ids[span.rows][rows_valid][bad][:5]
                problems.append(f"shard {span.index}: '{name.value}' has non-finite values in valid rows, "
                                f"e.g. ids {list(first)}")
    return VerifyReport(str(path), problems)


def require_finite(store: CacheStore, rows: np.ndarray, *arrays: np.ndarray) -> None:
    """Refuses NaN or infinite values read from rows marked valid, naming how many rows and the first sample.

    Each array holds one entry per row (any trailing shape), in the order of `rows`.
    """
    finite = np.logical_and.reduce([np.isfinite(a).reshape(len(rows), -1).all(axis=1) for a in arrays])
    if not finite.all():
        sample = store.ids[rows[np.argmin(finite)]]
        raise StoreError(f"{store.path}: {int((~finite).sum())} rows marked valid hold NaN or infinite values, "
                         f"e.g. sample {sample}; run `adaptor cache verify` and re-extract")


def store_summary(path: Path) -> dict[str, Any]:
    """A JSON-able description of a store: sizes, shards, splits, failures, arrays and provenance."""
    store = CacheStore.open(path)
    complete = store.complete_shard_indices()
    arrays = {}
    for name in store.attributes()["arrays"]:
        array = store.zarr_array(ArrayName(name))
        arrays[name] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "dims": list(array.metadata.dimension_names or ()),
            "shard_rows": store.shard_rows,
        }
    failures = store.failures()
    return {
        "path": str(path),
        "schema_version": store.attributes()["schema_version"],
        "rows": store.n_rows,
        "valid_rows": int(store.valid.sum()),
        "shards": {"total": len(store.shards()), "complete": len(complete)},
        "splits": dict(sorted(Counter(store.splits.tolist()).items())),
        "failures": {"count": len(failures), "by_reason": dict(Counter(f.kind for f in failures))},
        "bytes_on_disk": sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()
                             and MARKER_FOLDER not in p.parts),
        "arrays": arrays,
        "provenance": store.provenance.to_json(),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""
    p = summary["provenance"]
    lines = [
        f"store      {summary['path']}",
        f"dataset    {p['dataset']}  ({p['modality']}, manifest {p['manifest_sha256'][:12]})",
        f"backbone   {p['backbone']}  weights {p['weights_id']} (sha256 {p['weights_sha256'][:12]})",
        f"pooling    {p['pooling']}   dtype {p['dtype']}   code {p['code_version']}   created {p['created']}",
        f"rows       {summary['rows']} ({summary['valid_rows']} valid)   "
        f"splits {', '.join(f'{k} {v}' for k, v in summary['splits'].items())}",
        f"shards     {summary['shards']['complete']}/{summary['shards']['total']} complete",
        f"failures   {summary['failures']['count']}"
        + "".join(f"\n             {n} x {reason}" for reason, n in summary["failures"]["by_reason"].items()),
        f"size       {summary['bytes_on_disk'] / 2**20:.1f} MiB",
        "arrays",
    ]
    for name, a in summary["arrays"].items():
        dims = ", ".join(f"{d}={n}" for d, n in zip(a["dims"], a["shape"]))
        lines.append(f"  {name:<11} {a['dtype']:<8} ({dims})")
    lines.append("preprocessing " + json.dumps(p["preprocessing"], sort_keys=True))
    return "\n".join(lines)
