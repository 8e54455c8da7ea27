"""One cache store: a Zarr v3 group of row-sharded arrays for one (dataset, modality, backbone).

The shard is the unit of work and of writing: a writer fills every array's rows of one shard and
only then drops the shard's completion marker, which records the size and SHA-256 of every
array's object for that shard. A killed run therefore leaves at worst shards without markers,
which a resumed run rewrites whole; a shard changed after its marker was written is found by
`cache_schema.verify` (digests) or, when cheaply visible (a missing or resized object, a broken
shard index), by any read, which then names the store, the shard and the remedy.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from adaptor_vlp.cache_schema.arrays import FeatureShape, ShardSpan, array_names, create_arrays, default_shard_rows
from adaptor_vlp.cache_schema.ids import decode_ids
from adaptor_vlp.cache_schema.layout import (
    ATTRIBUTE_NAMESPACE,
    DIMENSION_NAMES,
    FEATURE_ARRAYS,
    FEATURE_MAP_ARRAYS,
    MARKER_FOLDER,
    SCHEMA_VERSION,
    SPLIT_NAMES,
    ArrayName,
    segmentation_store_path,
    shard_key,
)
from adaptor_vlp.cache_schema.markers import Failure, ShardFile, ShardMarker
from adaptor_vlp.cache_schema.provenance import Provenance, check_provenance, resume_expectation
from adaptor_vlp.cache_schema.shard_files import DamagedShardFile, NotPlainLayout, ShardFileReader, read_through_zarr
from adaptor_vlp.cache_schema.writes import (
    WriteFailed,
    remove_interrupted_writes,
    write_problem,
    write_text_atomically,
    writing,
)

ZARR_TEMPORARY_SUFFIX = ".partial"
"""Zarr's local store writes each object to `<object>.<uuid>.partial` and renames it (zarr.storage._local)."""


class StoreError(RuntimeError):
    """A store is missing, malformed, or used in a way its layout does not allow."""


class DamagedStore(StoreError):
    """A complete shard's data no longer matches what its marker recorded (missing, resized, unreadable)."""


def damage_remedy(store: Path) -> str:
    """What to do about a damaged store, in the order to do it."""
    return (f"run `adaptor cache verify {store}` to list the damage, `adaptor cache repair {store}` to mark the "
            "damaged shards incomplete, then rerun the command that wrote the store: it rewrites only those shards")


class CacheStore:
    """A handle on one store: create or open it, write shards, read rows by position or id."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self._group = group
        block = group.attrs.get(ATTRIBUTE_NAMESPACE)
        if not isinstance(block, dict):
            raise StoreError(f"{path}: no '{ATTRIBUTE_NAMESPACE}' attribute block; not an adaptor-vlp store")
        if block.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {block.get('schema_version')!r}, this code reads {SCHEMA_VERSION}; "
                "re-extract the store with this version."
            )
        self._block = block
        self.provenance = Provenance.from_json(block["provenance"], store=str(path))
        self.n_rows: int = block["n_rows"]
        self.shard_rows: int = block["shard_rows"]
        self.features = FeatureShape(**block["features"])

    @classmethod
    def create(
        cls,
        path: Path,
        provenance: Provenance,
        ids: Sequence[str],
        group_ids: Sequence[str],
        splits: Sequence[str],
        features: FeatureShape,
        shard_rows: int | None = None,
    ) -> "CacheStore":
        """Lays out a new, empty store with its row metadata; refuses to replace an existing one."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} already exists; open it to resume, or remove it to start over")
        n_rows = len(ids)
        if not (len(group_ids) == len(splits) == n_rows) or n_rows == 0:
            raise StoreError(
                f"{path}: ids ({n_rows}), group ids ({len(group_ids)}) and splits ({len(splits)}) "
                "must be non-empty and of one length"
            )
        if len(set(ids)) != n_rows:
            duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)[:5]
            raise StoreError(f"{path}: ids must be unique; repeated: {duplicates}")
        unknown_splits = sorted(set(splits) - set(SPLIT_NAMES))
        if unknown_splits:
            raise StoreError(f"{path}: unknown split names {unknown_splits}; expected {list(SPLIT_NAMES)}")
        shard_rows = shard_rows or default_shard_rows(features)
        if shard_rows < 1:
            raise StoreError(f"shard_rows must be at least 1, got {shard_rows}")

        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            group = zarr.open_group(staging, mode="w", zarr_format=3)
            create_arrays(group, ids, group_ids, splits, features, shard_rows)
            group.attrs[ATTRIBUTE_NAMESPACE] = {
                "schema_version": SCHEMA_VERSION,
                "n_rows": n_rows,
                "shard_rows": shard_rows,
                "split_names": list(SPLIT_NAMES),
                "features": features.to_json(),
                "arrays": {name.value: list(DIMENSION_NAMES[name]) for name in array_names(features)},
                "provenance": provenance.to_json(),
            }
            (staging / MARKER_FOLDER).mkdir()
            os.replace(staging, path)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise WriteFailed(f"{write_problem(path, error)}; nothing of the store was kept: free space and run "
                              "the command again") from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: Path, expect: Mapping[str, Any] | None = None, writable: bool = False) -> "CacheStore":
        """Opens a store; with `expect`, every named provenance field must match or ProvenanceMismatch names it."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: no cache store here (missing zarr.json); run the extract stage first")
        store = cls(path, zarr.open_group(path, mode="r+" if writable else "r", zarr_format=3))
        if expect:
            check_provenance(str(path), store.provenance, expect)
        return store

    @classmethod
    def create_or_resume(
        cls,
        path: Path,
        provenance: Provenance,
        ids: Sequence[str],
        group_ids: Sequence[str],
        splits: Sequence[str],
        features: FeatureShape,
        shard_rows: int | None = None,
    ) -> "CacheStore":
        """Creates the store, or reopens an existing one built with the same settings and rows so a run resumes.

        On resume, the temporary files of writes a killed run left unfinished are deleted (the caller holds the
        store's lock), so the resumed store holds the same files as one written without interruption.
        """
        path = Path(path)
        if not path.exists():
            return cls.create(path, provenance, ids, group_ids, splits, features, shard_rows)
        store = cls.open(path, expect=resume_expectation(provenance), writable=True)
        if store.features != features:
            raise StoreError(f"{path}: holds features {store.features}, this run asks for {features}; "
                             "use --overwrite to start over")
        if shard_rows is not None and store.shard_rows != shard_rows:
            raise StoreError(f"{path}: has {store.shard_rows} rows per shard, this run asks for {shard_rows}; "
                             "use --overwrite to start over")
        if list(store.ids) != list(ids):
            raise StoreError(f"{path}: its rows differ from this run's ({store.n_rows} stored, {len(ids)} asked); "
                             "use --overwrite to start over")
        remove_interrupted_writes(path, (ZARR_TEMPORARY_SUFFIX,))
        return store

    def shards(self) -> list[ShardSpan]:
        """Every shard's row range, in order."""
        return [
            ShardSpan(index, start, min(start + self.shard_rows, self.n_rows))
            for index, start in enumerate(range(0, self.n_rows, self.shard_rows))
        ]

    def complete_shard_indices(self) -> set[int]:
        """Shards whose completion marker exists."""
        folder = self.path / MARKER_FOLDER
        return {int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()} if folder.is_dir() else set()

    def marker_path(self, index: int) -> Path:
        """Where shard `index`'s completion marker lies (whether or not it exists)."""
        return self.path / MARKER_FOLDER / f"{index:06d}.json"

    def markers(self) -> list[ShardMarker]:
        """The markers of every complete shard, in shard order; DamagedStore names a marker that cannot be read."""
        return [marker for index in sorted(self.complete_shard_indices())
                if (marker := self.marker(index)) is not None]

    def shard_file(self, name: ArrayName, index: int) -> Path:
        """The object holding shard `index` of array `name`."""
        return self.path / shard_key(name, index)

    def incomplete_shards(self) -> list[ShardSpan]:
        """Shards still to be written (no completion marker)."""
        done = self.complete_shard_indices()
        return [span for span in self.shards() if span.index not in done]

    @property
    def is_complete(self) -> bool:
        return not self.incomplete_shards()

    @property
    def segmentation_size(self) -> int | None:
        """S when this is the unwarped segmentation store `<backbone>.seg<S>.zarr` of its dataset (the whole image
        at S px, `layout.segmentation_store_path`), else None (the plain store, or a view of a segmentation store)."""
        provenance = self.provenance
        size = provenance.preprocessing.get("image_size")
        if isinstance(size, int) and self.path == segmentation_store_path(
                self.path.parents[2], provenance.dataset, provenance.backbone, size):
            return size
        return None

    def write_shard(
        self,
        index: int,
        arrays: Mapping[ArrayName, np.ndarray],
        failed_rows: Mapping[int, str] | None = None,
    ) -> None:
        """Writes one whole shard of every feature array, then its completion marker.

        `arrays` holds each feature array's rows for this shard; `failed_rows` maps a row number
        within the store to the reason it could not be embedded. Those rows are stored as NaN and
        masked invalid, never as plausible-looking zeros.
        """
        span = self.shards()[index]
        failed_rows = dict(failed_rows or {})
        outside = [row for row in failed_rows if not span.start <= row < span.stop]
        if outside:
            raise StoreError(f"{self.path}: failed rows {outside[:5]} lie outside shard {index} {span.rows}")
        expected = set(self.features.shapes(self.n_rows))
        if set(arrays) != expected:
            raise StoreError(f"{self.path}: shard {index} must hold arrays {sorted(a.value for a in expected)}, "
                             f"got {sorted(ArrayName(a).value for a in arrays)}")
        failed_offsets = np.array(sorted(failed_rows), dtype=np.int64) - span.start
        valid = np.ones(span.stop - span.start, dtype=bool)
        valid[failed_offsets] = False
        for name, values in arrays.items():
            want = (span.stop - span.start, *self.features.shapes(self.n_rows)[name][1:])
            if values.shape != want:
                raise StoreError(f"{self.path}: shard {index} array '{name.value}' has shape {values.shape}, "
                                 f"expected {want}")
            if name in FEATURE_ARRAYS:
                values = values.astype(np.float16, copy=True)
                values[failed_offsets] = np.nan
            else:
                values = values.astype(bool, copy=True)
                values[failed_offsets] = False
            with writing(self.shard_file(name, index)):
                self._group[name.value][span.rows] = values
        with writing(self.shard_file(ArrayName.VALID, index)):
            self._group[ArrayName.VALID.value][span.rows] = valid
        shard_ids = decode_ids(self._read_zarr(ArrayName.ID, span.rows))
        marker = ShardMarker(
            index, span.start, span.stop,
            failures=tuple(Failure(str(shard_ids[row - span.start]), failed_rows[row]) for row in sorted(failed_rows)),
            files={name: ShardFile.of(self.path, shard_key(name, index)) for name in array_names(self.features)},
        )
        write_text_atomically(self.marker_path(index), json.dumps(marker.to_json(), indent=1) + "\n")

    @property
    def ids(self) -> np.ndarray:
        """Every row's sample id (str)."""
        return decode_ids(self._read_zarr(ArrayName.ID, slice(None)))

    @property
    def group_ids(self) -> np.ndarray:
        """Every row's join id (str): the study an image belongs to, or a text's own study."""
        return decode_ids(self._read_zarr(ArrayName.GROUP_ID, slice(None)))

    @property
    def splits(self) -> np.ndarray:
        """Every row's split name (str)."""
        names = np.array(self._block["split_names"])
        return names[self._read_zarr(ArrayName.SPLIT, slice(None))]

    @property
    def valid(self) -> np.ndarray:
        """True for rows that hold a real embedding (written, and not a recorded failure)."""
        return self._read_zarr(ArrayName.VALID, slice(None))

    def has(self, name: ArrayName) -> bool:
        return ArrayName(name) in self.features.shapes(self.n_rows)

    def read(self, name: ArrayName, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Reads an array, whole or at the given rows (a slice, or row indices in any order).

        Arrays in the plain shard layout `cache_schema.arrays` writes are read straight from their
        shard files into the result (`ShardFileReader`); any other layout is read through zarr.
        """
        name = ArrayName(name)
        if name.value not in self._block["arrays"]:
            raise StoreError(f"{self.path}: has no '{name.value}' array; it holds {sorted(self._block['arrays'])}"
                             + (" (extract with --tokens)" if name in (ArrayName.TOKENS, ArrayName.TOKEN_MASK) else "")
                             + (" (extract with --views K)" if name == ArrayName.VIEWS else "")
                             + (" (extract with --feature-maps)" if name in FEATURE_MAP_ARRAYS else ""))
        reader = ShardFileReader.of(self._group[name.value], self.path / name.value,
                                    must_exist=lambda shard: self.records_object(name, shard))
        if reader is not None:
            try:
                return reader.read(rows)
            except NotPlainLayout:
                pass
            except DamagedShardFile as damage:
                raise self.damaged(name, damage.shard, damage.problem) from None
        return self._read_zarr(name, slice(None) if rows is None else rows)

    def rows_for_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Row indices of the given ids, raising KeyError that names the first few unknown ids."""
        position = {sample_id: row for row, sample_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise KeyError(f"{self.path}: {len(missing)} ids not in the store, e.g. {missing[:5]}")
        return np.array([position[i] for i in ids], dtype=np.int64)

    def read_by_ids(self, name: ArrayName, ids: Sequence[str]) -> np.ndarray:
        """Rows of an array for the given ids, in the order asked."""
        return self.read(name, self.rows_for_ids(ids))

    def failures(self) -> list[Failure]:
        """Every recorded failure of the complete shards, in row order."""
        return [failure for marker in self.markers() for failure in marker.failures]

    def zarr_array(self, name: ArrayName) -> zarr.Array:
        """The underlying Zarr array, for readers that stream it (e.g. dask with one chunk per shard)."""
        return self._group[ArrayName(name).value]

    def attributes(self) -> dict[str, Any]:
        """The store's attribute block as written (schema version, sizes, arrays, provenance)."""
        return json.loads(json.dumps(self._block))

    def write_stopped(self, error: WriteFailed) -> WriteFailed:
        """The error of a run whose write failed, with what of the store is kept and how to resume."""
        return WriteFailed(f"{error}. {len(self.complete_shard_indices())} of {len(self.shards())} shards of "
                           f"{self.path} are complete and kept (an unfinished shard has no completion marker and "
                           "is rewritten whole); free space (or fix the folder) and rerun the same command: it "
                           "writes only the shards still missing")

    def records_object(self, name: ArrayName, index: int) -> bool:
        """Whether shard `index` is complete and its marker records an object of `name` (which must then exist).

        Readers ask this only for an object they did not find, so the marker is read only then; a
        shard without a marker (incomplete) reads as the fill value, as in any Zarr store.
        """
        marker = self.marker(index)
        return marker is not None and marker.files is not None and marker.files.get(ArrayName(name)) is not None

    def marker(self, index: int) -> ShardMarker | None:
        """Shard `index`'s completion marker, or None when the shard is incomplete."""
        path = self.marker_path(index)
        try:
            return ShardMarker.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise DamagedStore(f"{path}: completion marker unreadable ({type(error).__name__}: {error}); "
                               + damage_remedy(self.path)) from None

    def damaged(self, name: ArrayName, index: int, problem: str) -> DamagedStore:
        """The DamagedStore naming the store, the array, the shard and its rows, the problem and the remedy."""
        span = self.shards()[index]
        return DamagedStore(f"{self.path}: shard {index} (rows {span.start}-{span.stop - 1}) of array "
                           f"'{ArrayName(name).value}': {shard_key(name, index)} {problem}; "
                           + damage_remedy(self.path))

    def _read_zarr(self, name: ArrayName, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of an array read through zarr, its shards' objects checked first, any decoding error named."""
        try:
            return read_through_zarr(self._group[name.value], rows, self.shard_rows,
                                     shard_path=lambda shard: self.shard_file(name, shard),
                                     must_exist=lambda shard: self.records_object(name, shard))
        except DamagedShardFile as damage:
            raise self.damaged(name, damage.shard, damage.problem) from damage.__context__
