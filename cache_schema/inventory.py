"""What a cache folder holds: one store described in full, or every manifest and store under a folder.

`adaptor cache info` and `adaptor cache verify` accept a store or any folder holding stores (the
`cache/` the README's commands create). A store is a folder ending in `.zarr` with a `zarr.json`;
a manifest is a folder's `manifest.json`. Folders whose names start with a dot (a store being
created is staged in one) are not looked into.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptor_vlp.cache_schema.layout import MARKER_FOLDER, STORE_SUFFIX, ArrayName
from adaptor_vlp.cache_schema.lock import lock_path, read_holder
from adaptor_vlp.cache_schema.manifest import MANIFEST_CSV, MANIFEST_JSON
from adaptor_vlp.cache_schema.provenance import IncompleteProvenance
from adaptor_vlp.cache_schema.store import CacheStore, StoreError


class NothingCached(StoreError):
    """A path holds neither a store nor a folder of stores or manifests."""


@dataclass(frozen=True)
class CacheContents:
    """The manifests and stores under a folder, each by its path, in path order."""

    manifests: list[Path]
    stores: list[Path]


def is_store(path: Path) -> bool:
    """True for a folder that is a store (holds `zarr.json`)."""
    return (Path(path) / "zarr.json").is_file()


def find_contents(folder: Path) -> CacheContents:
    """Every manifest folder and store under `folder`; NothingCached when there is neither."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NothingCached(f"{folder}: no such folder; run the extract stage first")
    manifests, stores = [], []
    for directory, subdirectories, files in os.walk(folder):
        here = Path(directory)
        if MANIFEST_JSON in files:
            manifests.append(here)
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in list(subdirectories):
            if name.endswith(STORE_SUFFIX) and is_store(here / name):
                stores.append(here / name)
                subdirectories.remove(name)
    if not manifests and not stores:
        raise NothingCached(f"{folder}: no cache store or manifest here or below; run `adaptor extract manifest` "
                            "and `adaptor extract images|texts` first")
    return CacheContents(sorted(manifests), sorted(stores))


@dataclass(frozen=True)
class ManifestLine:
    """A manifest in one line: dataset, rows kept, rows excluded and where they are listed."""

    path: str
    dataset: str
    rows: int
    excluded: int
    excluded_by_reason: dict[str, int]
    excluded_file: str | None
    problem: str | None = None


@dataclass(frozen=True)
class StoreLine:
    """A store in one line: what it embeds, how far it is, what failed, its size, who writes it."""

    path: str
    dataset: str
    modality: str
    backbone: str
    rows: int
    complete_shards: int
    total_shards: int
    failures: int
    bytes: int
    writer: str | None = None
    problem: str | None = None


def manifest_line(folder: Path) -> ManifestLine:
    """The manifest in `folder` from its JSON (the CSV is not read)."""
    folder = Path(folder)
    try:
        description = json.loads((folder / MANIFEST_JSON).read_text(encoding="utf-8"))
        exclusions = dict(description["exclusions"])
        listed = description.get("excluded_file")
        return ManifestLine(str(folder / MANIFEST_CSV), description["dataset"], int(description["n_rows"]),
                            sum(exclusions.values()), exclusions, str(folder / listed) if listed else None)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        return ManifestLine(str(folder / MANIFEST_CSV), folder.name, 0, 0, {}, None,
                            f"unreadable {MANIFEST_JSON} ({type(error).__name__}: {error})")


def store_line(path: Path) -> StoreLine:
    """The store at `path` in one line; a store that cannot be opened says why."""
    holder = read_holder(lock_path(path))
    writer = holder.describe() if holder else None
    try:
        store = CacheStore.open(path)
        complete = store.complete_shard_indices()
        failures = len(store.failures())
    except (StoreError, IncompleteProvenance, KeyError, TypeError, ValueError) as error:
        return StoreLine(str(path), "?", "?", Path(path).stem, 0, 0, 0, 0, _bytes_on_disk(path), writer, str(error))
    provenance = store.provenance
    return StoreLine(str(path), provenance.dataset, provenance.modality.value, provenance.backbone, store.n_rows,
                     len(complete), len(store.shards()), failures, _bytes_on_disk(path), writer)


def contents_summary(folder: Path) -> dict[str, Any]:
    """The JSON-able inventory of a folder: its manifests and stores, one record each."""
    contents = find_contents(folder)
    return {"path": str(folder),
            "manifests": [asdict(manifest_line(m)) for m in contents.manifests],
            "stores": [asdict(store_line(s)) for s in contents.stores]}


def format_contents(summary: dict[str, Any]) -> str:
    """The inventory as aligned lines: one per manifest, then one per store."""
    rows = [["kind", "dataset", "modality", "backbone", "rows", "shards", "failures", "size", "path"]]
    for m in summary["manifests"]:
        excluded = f"{m['excluded']} excluded" + (f", listed in {m['excluded_file']}" if m["excluded_file"] else "")
        rows.append(["manifest", m["dataset"], "", "", str(m["rows"]), "", "", "",
                     m["path"] + (f"  ({excluded})" if not m["problem"] else f"  PROBLEM: {m['problem']}")])
    for s in summary["stores"]:
        extra = f"  PROBLEM: {s['problem']}" if s["problem"] else ""
        extra += f"  (locked by {s['writer']})" if s["writer"] else ""
        rows.append(["store", s["dataset"], s["modality"], s["backbone"], str(s["rows"]),
                     f"{s['complete_shards']}/{s['total_shards']}", str(s["failures"]), _mib(s["bytes"]),
                     s["path"] + extra])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def store_summary(path: Path) -> dict[str, Any]:
    """A JSON-able description of a store: sizes, shards, splits, failures, arrays, provenance, its manifest."""
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
    manifest_folder = Path(path).resolve().parent.parent
    holder = read_holder(lock_path(path))
    return {
        "path": str(path),
        "schema_version": store.attributes()["schema_version"],
        "rows": store.n_rows,
        "valid_rows": int(store.valid.sum()),
        "shards": {"total": len(store.shards()), "complete": len(complete)},
        "splits": dict(sorted(Counter(store.splits.tolist()).items())),
        "failures": {"count": len(failures), "by_reason": dict(Counter(f.kind for f in failures))},
        "bytes_on_disk": _bytes_on_disk(path),
        "arrays": arrays,
        "provenance": store.provenance.to_json(),
        "manifest": asdict(manifest_line(manifest_folder)) if (manifest_folder / MANIFEST_JSON).is_file() else None,
        "writer": holder.describe() if holder else None,
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
        f"shards     {summary['shards']['complete']}/{summary['shards']['total']} complete"
        + (f"   locked by {summary['writer']}" if summary["writer"] else ""),
        f"failures   {summary['failures']['count']}"
        + "".join(f"\n             {n} x {reason}" for reason, n in summary["failures"]["by_reason"].items()),
    ]
    manifest = summary["manifest"]
    if manifest is not None and not manifest["problem"]:
        listed = f", listed in {manifest['excluded_file']}" if manifest["excluded_file"] else ""
        reasons = "".join(f"\n             {n} x {reason}" for reason, n in manifest["excluded_by_reason"].items())
        lines.append(f"manifest   {manifest['path']}: {manifest['rows']} images, {manifest['excluded']} excluded"
                     f"{listed}{reasons}")
    lines += [f"size       {_mib(summary['bytes_on_disk'])}", "arrays"]
    for name, a in summary["arrays"].items():
        dims = ", ".join(f"{d}={n}" for d, n in zip(a["dims"], a["shape"]))
        lines.append(f"  {name:<11} {a['dtype']:<8} ({dims})")
    lines.append("preprocessing " + json.dumps(p["preprocessing"], sort_keys=True))
    return "\n".join(lines)


def _bytes_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and MARKER_FOLDER not in p.parts)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
