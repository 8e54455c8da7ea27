"""One cache store: a Zarr v3 group of row-sharded arrays for one (dataset, modality, backbone).

The shard is the unit of work and of writing: a writer fills every array's rows of one shard and
only then drops the shard's completion marker, which records the size and SHA-256 of every
array's object for that shard. A killed run therefore leaves at worst shards without markers,
which a resumed run rewrites whole; a shard changed after its marker was written is found by
`cache_schema.verify` (digests) or, when cheaply visible (a missing or resized object, a broken
shard index), by any read, which then names the store, the shard and the remedy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from adaptor_vlp.cache_schema.ids import decode_ids, encode_ids
from adaptor_vlp.cache_schema.layout import (
    ATTRIBUTE_NAMESPACE,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_SHARD_BYTES,
    DIMENSION_NAMES,
    FEATURE_ARRAYS,
    MARKER_FOLDER,
    SCHEMA_VERSION,
    SPLIT_NAMES,
    ArrayName,
    shard_key,
)
from adaptor_vlp.cache_schema.provenance import Provenance, check_provenance, resume_expectation
from adaptor_vlp.cache_schema.writes import WriteFailed, write_problem, write_text_atomically, writing

MAX_SHARD_ROWS = 4096
"""Upper bound on rows per shard, so that even small embeddings give many resumable units of work."""


class StoreError(RuntimeError):
    """A store is missing, malformed, or used in a way its layout does not allow."""


class DamagedStore(StoreError):
    """A complete shard's data no longer matches what its marker recorded (missing, resized, unreadable)."""


def damage_remedy(store: Path) -> str:
    """What to do about a damaged store, in the order to do it."""
    return (f"run `adaptor cache verify {store}` to list the damage, `adaptor cache repair {store}` to mark the "
            "damaged shards incomplete, then rerun the command that wrote the store: it rewrites only those shards")


@dataclass(frozen=True)
class ShardFile:
    """One array's object of a complete shard as its marker records it: where, how many bytes, their SHA-256."""

    key: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, store: Path, key: str) -> "ShardFile | None":
        """The record of the object `key` as it is on disk now; None when there is no such object."""
        digest = hashlib.sha256()
        size = 0
        try:
            with open(Path(store) / key, "rb", buffering=0) as file:
                for block in iter(lambda: file.read(_DIGEST_BLOCK_BYTES), b""):
                    digest.update(block)
                    size += len(block)
        except FileNotFoundError:
            return None
        return cls(key, size, digest.hexdigest())

    def to_json(self) -> dict[str, Any]:
        return {"file": self.key, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> "ShardFile | None":
        return None if record is None else cls(record["file"], int(record["bytes"]), record["sha256"])


_DIGEST_BLOCK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class ShardMarker:
    """A complete shard's marker: its rows, its failures and, per array, its object's record.

    `files` maps every array to its ShardFile, or to None where no object was written (every inner
    chunk held the fill value, e.g. a token mask of a shard whose rows all failed). It is None
    for a marker written before markers carried checksums.
    """

    index: int
    start: int
    stop: int
    failures: tuple["Failure", ...]
    files: Mapping[ArrayName, ShardFile | None] | None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "shard": self.index,
            "start": self.start,
            "stop": self.stop,
            "failures": [{"id": f.id, "reason": f.reason} for f in self.failures],
        }
        if self.files is not None:
            document["files"] = {name.value: None if record is None else record.to_json()
                                 for name, record in self.files.items()}
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> "ShardMarker":
        files = document.get("files")
        return cls(
            index=int(document["shard"]),
            start=int(document["start"]),
            stop=int(document["stop"]),
            failures=tuple(Failure(**f) for f in document["failures"]),
            files=None if files is None else {ArrayName(n): ShardFile.from_json(r) for n, r in files.items()},
        )


@dataclass(frozen=True)
class FeatureShape:
    """The feature arrays a store holds and their sizes."""

    embedding_dim: int
    token_count: int = 0
    token_dim: int = 0
    views: int = 0

    def shapes(self, n_rows: int) -> dict[ArrayName, tuple[int, ...]]:
        """Shape of every feature array (and the token mask) for a store of n_rows rows."""
        shapes: dict[ArrayName, tuple[int, ...]] = {ArrayName.EMBEDDING: (n_rows, self.embedding_dim)}
        if self.token_count:
            shapes[ArrayName.TOKENS] = (n_rows, self.token_count, self.token_dim)
            shapes[ArrayName.TOKEN_MASK] = (n_rows, self.token_count)
        if self.views:
            shapes[ArrayName.VIEWS] = (n_rows, self.views, self.embedding_dim)
        return shapes

    def row_bytes(self) -> int:
        """Bytes of the widest float16 array's row: it decides how many rows a shard holds."""
        return 2 * max(self.embedding_dim, self.token_count * self.token_dim, self.views * self.embedding_dim)


@dataclass(frozen=True)
class ShardSpan:
    """Rows [start, stop) of shard number `index`."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


@dataclass(frozen=True)
class Failure:
    """A sample that could not be embedded, and why; its rows are masked out (valid=False, NaN)."""

    id: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its sample-specific detail (a path or count in trailing parentheses), for counting."""
        return self.reason.split(" (", 1)[0]


def default_shard_rows(features: FeatureShape) -> int:
    """Rows per shard so that the widest array's shard is near DEFAULT_SHARD_BYTES."""
    return int(np.clip(DEFAULT_SHARD_BYTES // features.row_bytes(), 1, MAX_SHARD_ROWS))


def _chunk_rows(shard_rows: int, row_bytes: int) -> int:
    """Largest divisor of shard_rows whose chunk stays under DEFAULT_CHUNK_BYTES (at least one row)."""
    limit = max(1, DEFAULT_CHUNK_BYTES // row_bytes)
    return max(d for d in range(1, shard_rows + 1) if shard_rows % d == 0 and d <= limit)


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
            id_rows = encode_ids(list(ids))
            _create_array(group, ArrayName.ID, id_rows, shard_rows)
            _create_array(group, ArrayName.GROUP_ID, encode_ids(list(group_ids)), shard_rows)
            split_codes = np.array([SPLIT_NAMES.index(s) for s in splits], dtype=np.uint8)
            _create_array(group, ArrayName.SPLIT, split_codes, shard_rows)
            _create_empty(group, ArrayName.VALID, (n_rows,), np.bool_, False, shard_rows, 1)
            row_bytes = features.row_bytes()
            for name, shape in features.shapes(n_rows).items():
                if name == ArrayName.TOKEN_MASK:
                    _create_empty(group, name, shape, np.bool_, False, shard_rows, shape[1])
                else:
                    _create_empty(group, name, shape, np.float16, np.nan, shard_rows, row_bytes)
            group.attrs[ATTRIBUTE_NAMESPACE] = {
                "schema_version": SCHEMA_VERSION,
                "n_rows": n_rows,
                "shard_rows": shard_rows,
                "split_names": list(SPLIT_NAMES),
                "features": {
                    "embedding_dim": features.embedding_dim,
                    "token_count": features.token_count,
                    "token_dim": features.token_dim,
                    "views": features.views,
                },
                "arrays": {name.value: list(DIMENSION_NAMES[name]) for name in _array_names(features)},
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
        """Creates the store, or reopens an existing one built with the same settings and rows so a run resumes."""
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
            files={name: ShardFile.of(self.path, shard_key(name, index)) for name in _array_names(self.features)},
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

        Arrays in the plain shard layout this module writes are read straight from their shard
        files into the result (see `_ShardFiles`); any other layout is read through zarr.
        """
        name = ArrayName(name)
        if name.value not in self._block["arrays"]:
            raise StoreError(f"{self.path}: has no '{name.value}' array; it holds {sorted(self._block['arrays'])}"
                             + (" (extract with --tokens)" if name in (ArrayName.TOKENS, ArrayName.TOKEN_MASK) else "")
                             + (" (extract with --views K)" if name == ArrayName.VIEWS else ""))
        shard_files = _ShardFiles.of(self._group[name.value], self.path / name.value, _ShardCheck(self, name))
        if shard_files is not None:
            try:
                return shard_files.read(rows)
            except _NotPlainLayout:
                pass
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

    def check_missing_object(self, name: ArrayName, index: int) -> None:
        """Raises DamagedStore when shard `index` is complete and its marker records an object of `name`.

        Readers call this only for an object they did not find, so the marker is read only then; a
        shard without a marker (incomplete) reads as the fill value, as in any Zarr store.
        """
        marker = self.marker(index)
        if marker is not None and marker.files is not None and marker.files.get(ArrayName(name)) is not None:
            self.raise_damaged(name, index, "is missing")

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

    def raise_damaged(self, name: ArrayName, index: int, problem: str) -> NoReturn:
        """Raises DamagedStore naming the store, the array, the shard and its rows, the problem and the remedy."""
        span = self.shards()[index]
        raise DamagedStore(f"{self.path}: shard {index} (rows {span.start}-{span.stop - 1}) of array "
                           f"'{ArrayName(name).value}': {shard_key(name, index)} {problem}; "
                           + damage_remedy(self.path))

    def _undecodable_shard(self, array: zarr.Array, shards: Sequence[int]) -> int | None:
        """The first of `shards` that zarr fails to decode (the failing read covered several)."""
        for index in shards:
            try:
                array[self.shards()[index].rows]
            except Exception:  # any codec's error marks the shard
                return index
        return None

    def _read_zarr(self, name: ArrayName, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of an array read through zarr, its shards' objects checked first, any decoding error named."""
        array = self._group[name.value]
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.n_rows)
            touched = list(range(start // self.shard_rows, -(-max(start, stop) // self.shard_rows)))
        else:
            rows = np.asarray(rows, dtype=np.int64)
            touched = np.unique(np.where(rows < 0, rows + self.n_rows, rows) // self.shard_rows).tolist()
        for index in touched:
            if not self.shard_file(name, index).is_file():
                self.check_missing_object(name, index)
        try:
            if isinstance(rows, slice):
                return array[rows]
            order = np.argsort(rows, kind="stable")
            values = array.get_orthogonal_selection((rows[order],) + (slice(None),) * (array.ndim - 1))
        except (IndexError, TypeError):
            raise
        except Exception as error:  # a damaged object surfaces as any codec's error
            index = self._undecodable_shard(array, touched)
            self.raise_damaged(name, index if index is not None else (touched[0] if touched else 0),
                               f"cannot be decoded ({type(error).__name__}: {error})")
        result = np.empty_like(values)
        result[order] = values
        return result


_SHARD_INDEX_ENTRY = np.dtype([("offset", "<u8"), ("nbytes", "<u8")])
"""One inner chunk's entry in a Zarr v3 shard index (sharding codec spec): where its bytes start, how many."""
_SHARD_INDEX_CHECKSUM_BYTES = 4
"""The crc32c that follows the index."""
_EMPTY_CHUNK = 2**64 - 1
"""Offset and nbytes of an inner chunk that was never written (it reads as the fill value)."""
_RAW_LITTLE_ENDIAN = {"name": "bytes", "configuration": {"endian": "little"}}
_RAW_SINGLE_BYTE = {"name": "bytes"}
_PLAIN_INDEX_CODECS = (_RAW_LITTLE_ENDIAN, {"name": "crc32c"})
_DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}


class _NotPlainLayout(Exception):
    """A shard file does not hold raw inner chunks of whole rows where its index says: zarr reads instead."""


class _ShardCheck:
    """What a direct read verifies about one array's shard objects at no cost to a sound store.

    A missing object is looked up in its shard's marker (only then is a marker read); a present
    one has its shard index checked against the index's crc32c. Truncating or extending a shard
    file moves the index (it is the file's last bytes), so that check also catches a file of the
    wrong size; changed bytes within the data are found by `adaptor cache verify` (digests).
    """

    def __init__(self, store: CacheStore, name: ArrayName) -> None:
        self._store = store
        self._name = name

    def missing(self, shard: int) -> None:
        self._store.check_missing_object(self._name, shard)

    def damaged(self, shard: int, problem: str) -> NoReturn:
        self._store.raise_damaged(self._name, shard, problem)


@dataclass(frozen=True)
class _ChunkRun:
    """Inner chunks lying back to back in a shard file: one read fills their rows of the result."""

    first_row: int
    last_row: int
    position: int
    """File offset of `first_row`'s bytes."""


class _ShardFiles:
    """Reads rows of a row-sharded, uncompressed array straight from its shard files.

    In the layout `_create_array` and `_create_empty` write, a shard file (Zarr v3 sharding
    codec, index at the end) holds inner chunks of whole rows stored raw and little endian, each
    at the offset its index entry gives; zarr writes them in order, back to back. Reading those
    bytes straight into the result, rather than through zarr's per-chunk decode and a second
    copy, makes a full read about 3x faster, near h5py on a contiguous dataset
    (`python -m bench.cache_formats`). A row range costs, per shard file, one open, one fstat,
    one read of the index (checked against its crc32c) and one `preadv` per run of adjacent
    inner chunks: one for a whole shard as written. Random rows are copied from a memory map of
    each shard file, so only the rows asked for are read.

    A missing, truncated or extended object of a complete shard is an error naming it, never
    fill values or misplaced bytes (`_ShardCheck`).
    """

    def __init__(self, folder: Path, shape: tuple[int, ...], dtype: np.dtype, fill_value: Any,
                 shard_rows: int, chunk_rows: int, check: _ShardCheck) -> None:
        self.folder = folder
        self.shape = shape
        self.dtype = dtype
        self.fill_value = fill_value
        self.chunk_rows = chunk_rows
        self.chunks_per_shard = shard_rows // chunk_rows
        self.shard_rows = shard_rows
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.check = check

    @classmethod
    def of(cls, array: zarr.Array, folder: Path, check: _ShardCheck) -> "_ShardFiles | None":
        """The direct reader of `array`, or None when its metadata is not the plain row-sharded layout."""
        metadata = array.metadata.to_dict()
        codecs = metadata.get("codecs", ())
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            return None
        sharding = codecs[0]["configuration"]
        shape = tuple(array.shape)
        shard_shape = tuple(metadata["chunk_grid"]["configuration"]["chunk_shape"])
        chunk_shape = tuple(sharding["chunk_shape"])
        dtype = np.dtype(array.dtype)
        raw = [_RAW_LITTLE_ENDIAN] if dtype.itemsize > 1 else [_RAW_LITTLE_ENDIAN, _RAW_SINGLE_BYTE]
        plain = (
            len(sharding["codecs"]) == 1 and sharding["codecs"][0] in raw
            and tuple(sharding["index_codecs"]) == _PLAIN_INDEX_CODECS
            and sharding.get("index_location", "end") == "end"
            and metadata["chunk_key_encoding"] == _DEFAULT_KEYS
            and shard_shape[1:] == chunk_shape[1:] == shape[1:]
            and shard_shape[0] % chunk_shape[0] == 0
            and not dtype.hasobject
        )
        if not plain:
            return None
        return cls(folder, shape, dtype.newbyteorder("<"), array.metadata.fill_value, shard_shape[0], chunk_shape[0],
                   check)

    def read(self, rows: slice | np.ndarray | None) -> np.ndarray:
        """The rows asked for, as zarr would return them; raises _NotPlainLayout to leave the read to zarr."""
        n_rows = self.shape[0]
        if rows is None:
            rows = slice(None)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n_rows)
            if step != 1:
                raise _NotPlainLayout
            return self._read_range(start, max(start, stop))
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        outside = rows[(rows < -n_rows) | (rows >= n_rows)]
        if outside.size:
            raise IndexError(f"{self.folder}: rows {outside[:5].tolist()} lie outside 0..{n_rows - 1}")
        return self._read_rows(np.where(rows < 0, rows + n_rows, rows))

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        result = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        flat = memoryview(result.reshape(-1).view(np.uint8))
        for shard in range(start // self.shard_rows, -(-stop // self.shard_rows)):
            low, high = max(start, shard * self.shard_rows), min(stop, (shard + 1) * self.shard_rows)
            try:
                descriptor = os.open(self._shard_path(shard), os.O_RDONLY)
            except FileNotFoundError:
                self.check.missing(shard)
                result[low - start:high - start] = self.fill_value
                continue
            try:
                offsets = self._chunk_offsets(shard, descriptor)
                filled = low
                for run in self._runs(shard, offsets, low, high):
                    result[filled - start:run.first_row - start] = self.fill_value
                    into = flat[(run.first_row - start) * self.row_bytes:(run.last_row - start) * self.row_bytes]
                    _read_fully(descriptor, into, run.position)
                    filled = run.last_row
                result[filled - start:high - start] = self.fill_value
            finally:
                os.close(descriptor)
        return result

    def _runs(self, shard: int, offsets: list[int | None], low: int, high: int) -> list[_ChunkRun]:
        """The written inner chunks covering rows [low, high) of a shard, merged where they lie back to back."""
        runs: list[_ChunkRun] = []
        first_chunk = shard * self.chunks_per_shard
        for local in range((low // self.chunk_rows) - first_chunk, -(-high // self.chunk_rows) - first_chunk):
            if offsets[local] is None:
                continue
            chunk_start = (first_chunk + local) * self.chunk_rows
            first, last = max(low, chunk_start), min(high, chunk_start + self.chunk_rows)
            position = offsets[local] + (first - chunk_start) * self.row_bytes
            previous = runs[-1] if runs else None
            if (previous is not None and previous.last_row == first
                    and previous.position + (first - previous.first_row) * self.row_bytes == position):
                runs[-1] = _ChunkRun(previous.first_row, last, previous.position)
            else:
                runs.append(_ChunkRun(first, last, position))
        return runs

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        result = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        chunk_of_row = rows // self.chunk_rows
        order = np.argsort(chunk_of_row, kind="stable")
        chunks, firsts = np.unique(chunk_of_row[order], return_index=True)
        shards: dict[int, tuple[list[int | None], np.ndarray | None]] = {}
        for chunk, positions in zip(chunks.tolist(), np.split(order, firsts[1:])):
            shard, local = divmod(chunk, self.chunks_per_shard)
            if shard not in shards:
                shards[shard] = self._mapped_shard(shard)
            offsets, data = shards[shard]
            if data is None or offsets[local] is None:
                result[positions] = self.fill_value
                continue
            chunk_bytes = data[offsets[local]:offsets[local] + self.chunk_rows * self.row_bytes]
            chunk_values = chunk_bytes.view(self.dtype).reshape(self.chunk_rows, *self.shape[1:])
            result[positions] = chunk_values[rows[positions] - chunk * self.chunk_rows]
        return result

    def _mapped_shard(self, shard: int) -> tuple[list[int | None], np.ndarray | None]:
        """A shard file's chunk offsets and a memory map of it; ([], None) when there is no file."""
        try:
            descriptor = os.open(self._shard_path(shard), os.O_RDONLY)
        except FileNotFoundError:
            self.check.missing(shard)
            return [], None
        try:
            offsets = self._chunk_offsets(shard, descriptor)
            return offsets, np.memmap(self._shard_path(shard), dtype=np.uint8, mode="r")
        finally:
            os.close(descriptor)

    def _chunk_offsets(self, shard: int, descriptor: int) -> list[int | None]:
        """Where each inner chunk of an open shard file starts (None: never written).

        The index is checked against its crc32c (as zarr checks it on every read). Raises
        _NotPlainLayout unless every written chunk holds exactly its rows' raw bytes.
        """
        file_bytes = os.fstat(descriptor).st_size
        index_bytes = self.chunks_per_shard * _SHARD_INDEX_ENTRY.itemsize
        data_bytes = file_bytes - index_bytes - _SHARD_INDEX_CHECKSUM_BYTES
        if data_bytes < 0:
            self.check.damaged(shard, f"holds {file_bytes} bytes, fewer than its shard index needs")
        tail = os.pread(descriptor, index_bytes + _SHARD_INDEX_CHECKSUM_BYTES, data_bytes)
        if int.from_bytes(tail[index_bytes:], "little") != google_crc32c.value(tail[:index_bytes]):
            self.check.damaged(shard, "has a shard index that fails its crc32c checksum")
        chunk_bytes = self.chunk_rows * self.row_bytes
        offsets: list[int | None] = []
        for offset, nbytes in np.frombuffer(tail[:index_bytes], dtype=_SHARD_INDEX_ENTRY).tolist():
            if offset == nbytes == _EMPTY_CHUNK:
                offsets.append(None)
            elif nbytes == chunk_bytes and offset + nbytes <= data_bytes:
                offsets.append(offset)
            else:
                raise _NotPlainLayout
        return offsets

    def _shard_path(self, shard: int) -> Path:
        return self.folder.joinpath("c", str(shard), *("0" for _ in self.shape[1:]))


def _read_fully(descriptor: int, into: memoryview, position: int) -> None:
    """Fills `into` from the file at `position`; a read may return less (Linux caps one at ~2 GiB), so loop."""
    while len(into):
        count = os.preadv(descriptor, [into], position)
        if count == 0:
            raise _NotPlainLayout
        into, position = into[count:], position + count


def _array_names(features: FeatureShape) -> list[ArrayName]:
    return [ArrayName.ID, ArrayName.GROUP_ID, ArrayName.SPLIT, ArrayName.VALID, *features.shapes(1)]


def _create_array(group: zarr.Group, name: ArrayName, data: np.ndarray, shard_rows: int) -> None:
    """Creates a row-metadata array and writes it whole (only ever at store creation, by one writer).

    Ids are zero-padded ASCII and compress several-fold with Blosc (a core Zarr v3 codec whose
    bytes are deterministic, unlike gzip's timestamped header), which keeps them from adding
    measurably to a store that is otherwise half a float32 cache's size.
    """
    array = group.create_array(
        name.value,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(shard_rows, *data.shape[1:]),
        shards=(shard_rows, *data.shape[1:]),
        compressors=BloscCodec(cname="zstd", clevel=5, shuffle="noshuffle"),
        dimension_names=DIMENSION_NAMES[name],
        fill_value=0,
    )
    array[...] = data


def _create_empty(
    group: zarr.Group,
    name: ArrayName,
    shape: tuple[int, ...],
    dtype: type,
    fill_value: Any,
    shard_rows: int,
    row_bytes: int,
) -> None:
    """Creates a feature array sharded by rows: one object per shard, inner chunks for random reads."""
    group.create_array(
        name.value,
        shape=shape,
        dtype=dtype,
        chunks=(_chunk_rows(shard_rows, row_bytes), *shape[1:]),
        shards=(shard_rows, *shape[1:]),
        compressors=None,
        dimension_names=DIMENSION_NAMES[name],
        fill_value=fill_value,
    )
