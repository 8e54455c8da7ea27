"""Reading rows of row-sharded Zarr v3 arrays: straight from their shard files, or through zarr.

A shard file (Zarr v3 sharding codec, index at the end) of an array in the plain layout that
`cache_schema.arrays` writes holds inner chunks of whole rows stored raw and little endian, each
at the offset its index entry gives. This module reads those bytes into the result without zarr
(the index checked against its crc32c, one `preadv` per run of adjacent chunks, a memory map for
random rows); `read_through_zarr` reads any other layout. It knows nothing of stores or
markers: a damaged shard file raises `DamagedShardFile` naming the shard and the problem, and
whether a missing file is damage is asked of the caller (`must_exist`); the store turns both
into its own message.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import google_crc32c
import numpy as np
import zarr

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


class NotPlainLayout(Exception):
    """A shard file does not hold raw inner chunks of whole rows where its index says: read through zarr instead."""


class DamagedShardFile(Exception):
    """A shard file that must exist is missing, its index cannot be trusted (too short, wrong checksum), or zarr
    cannot decode it.

    Truncating or extending a shard file moves the index (it is the file's last bytes), so the
    crc32c check also catches a file of the wrong size; changed bytes within the data are left to
    digests (`adaptor cache verify`).
    """

    def __init__(self, shard: int, problem: str) -> None:
        super().__init__(f"shard {shard} {problem}")
        self.shard = shard
        self.problem = problem


def _never_required(shard: int) -> bool:
    """The Zarr default: a missing shard file reads as the fill value."""
    return False


@dataclass(frozen=True)
class _ChunkRun:
    """Inner chunks lying back to back in a shard file: one read fills their rows of the result."""

    first_row: int
    last_row: int
    position: int
    """File offset of `first_row`'s bytes."""


class ShardFileReader:
    """Reads rows of a row-sharded, uncompressed array straight from its shard files.

    In the layout `cache_schema.arrays` writes, a shard file (Zarr v3 sharding
    codec, index at the end) holds inner chunks of whole rows stored raw and little endian, each
    at the offset its index entry gives; zarr writes them in order, back to back. Reading those
    bytes straight into the result, rather than through zarr's per-chunk decode and a second
    copy, makes a full read about 3x faster, near h5py on a contiguous dataset
    (`python -m bench.cache_formats`). A row range costs, per shard file, one open, one fstat,
    one read of the index (checked against its crc32c) and one `preadv` per run of adjacent
    inner chunks: one for a whole shard as written. Random rows are copied from a memory map of
    each shard file, so only the rows asked for are read.

    A missing file of a shard that `must_exist` (e.g. a complete shard whose marker records it),
    or a truncated or extended file, raises DamagedShardFile, never fill values or misplaced bytes.
    """

    def __init__(self, folder: Path, shape: tuple[int, ...], dtype: np.dtype, fill_value: Any,
                 shard_rows: int, chunk_rows: int, must_exist: Callable[[int], bool] = _never_required) -> None:
        self.folder = folder
        self.shape = shape
        self.dtype = dtype
        self.fill_value = fill_value
        self.chunk_rows = chunk_rows
        self.chunks_per_shard = shard_rows // chunk_rows
        self.shard_rows = shard_rows
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.must_exist = must_exist

    @classmethod
    def of(cls, array: zarr.Array, folder: Path,
           must_exist: Callable[[int], bool] = _never_required) -> "ShardFileReader | None":
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
                   must_exist)

    def read(self, rows: slice | np.ndarray | None) -> np.ndarray:
        """The rows asked for, as zarr would return them; raises NotPlainLayout to leave the read to zarr."""
        n_rows = self.shape[0]
        if rows is None:
            rows = slice(None)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n_rows)
            if step != 1:
                raise NotPlainLayout
            return self._read_range(start, max(start, stop))
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        outside = rows[(rows < -n_rows) | (rows >= n_rows)]
        if outside.size:
            raise IndexError(f"{self.folder}: rows {outside[:5].tolist()} lie outside 0..{n_rows - 1}")
        return self._read_rows(np.where(rows < 0, rows + n_rows, rows))

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        result = _huge_page_aligned_empty((stop - start, *self.shape[1:]), self.dtype)
        flat = memoryview(result.reshape(-1).view(np.uint8))
        for shard in range(start // self.shard_rows, -(-stop // self.shard_rows)):
            low, high = max(start, shard * self.shard_rows), min(stop, (shard + 1) * self.shard_rows)
            try:
                descriptor = os.open(self._shard_path(shard), os.O_RDONLY)
            except FileNotFoundError:
                self._missing(shard)
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
            self._missing(shard)
            return [], None
        try:
            offsets = self._chunk_offsets(shard, descriptor)
            return offsets, np.memmap(self._shard_path(shard), dtype=np.uint8, mode="r")
        finally:
            os.close(descriptor)

    def _chunk_offsets(self, shard: int, descriptor: int) -> list[int | None]:
        """Where each inner chunk of an open shard file starts (None: never written).

        The index is checked against its crc32c (as zarr checks it on every read). Raises
        NotPlainLayout unless every written chunk holds exactly its rows' raw bytes.
        """
        file_bytes = os.fstat(descriptor).st_size
        index_bytes = self.chunks_per_shard * _SHARD_INDEX_ENTRY.itemsize
        data_bytes = file_bytes - index_bytes - _SHARD_INDEX_CHECKSUM_BYTES
        if data_bytes < 0:
            raise DamagedShardFile(shard, f"holds {file_bytes} bytes, fewer than its shard index needs")
        tail = os.pread(descriptor, index_bytes + _SHARD_INDEX_CHECKSUM_BYTES, data_bytes)
        if int.from_bytes(tail[index_bytes:], "little") != google_crc32c.value(tail[:index_bytes]):
            raise DamagedShardFile(shard, "has a shard index that fails its crc32c checksum")
        chunk_bytes = self.chunk_rows * self.row_bytes
        offsets: list[int | None] = []
        for offset, nbytes in np.frombuffer(tail[:index_bytes], dtype=_SHARD_INDEX_ENTRY).tolist():
            if offset == nbytes == _EMPTY_CHUNK:
                offsets.append(None)
            elif nbytes == chunk_bytes and offset + nbytes <= data_bytes:
                offsets.append(offset)
            else:
                raise NotPlainLayout
        return offsets

    def _missing(self, shard: int) -> None:
        """A shard file was not found: damage when the caller says it must exist, else the fill value."""
        if self.must_exist(shard):
            raise DamagedShardFile(shard, "is missing")

    def _shard_path(self, shard: int) -> Path:
        return self.folder.joinpath("c", str(shard), *("0" for _ in self.shape[1:]))


_HUGE_PAGE_BYTES = 2**21


def _huge_page_aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose buffer starts on a 2 MiB boundary when it spans one or more.

    numpy asks the kernel for transparent huge pages on large buffers (madvise), but an array that
    starts off a huge-page boundary was measured to take the slow path: the page-cache copy of a
    77 MB store into it took 14-15 ms against 9.5-10 ms into an aligned one, on the AMD EPYC VM
    (BENCHMARKS.md, "Cache formats"). The price is at most 2 MiB of address space per read.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < _HUGE_PAGE_BYTES:
        return np.empty(shape, dtype=dtype)
    buffer = np.empty(nbytes + _HUGE_PAGE_BYTES, dtype=np.uint8)
    start = -buffer.ctypes.data % _HUGE_PAGE_BYTES
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def _read_fully(descriptor: int, into: memoryview, position: int) -> None:
    """Fills `into` from the file at `position`; a read may return less (Linux caps one at ~2 GiB), so loop."""
    while len(into):
        count = os.preadv(descriptor, [into], position)
        if count == 0:
            raise NotPlainLayout
        into, position = into[count:], position + count


def read_through_zarr(array: zarr.Array, rows: slice | np.ndarray, shard_rows: int, shard_path: Callable[[int], Path],
                      must_exist: Callable[[int], bool] = _never_required) -> np.ndarray:
    """Rows of a row-sharded array read through zarr, for any layout (a slice, or row indices in any order).

    Before the read, each touched shard whose file (`shard_path`) is missing is checked with
    `must_exist`; a shard zarr fails to decode raises DamagedShardFile naming it ("cannot be decoded").
    """
    n_rows = array.shape[0]
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(n_rows)
        touched = list(range(start // shard_rows, -(-max(start, stop) // shard_rows)))
    else:
        rows = np.asarray(rows, dtype=np.int64)
        touched = np.unique(np.where(rows < 0, rows + n_rows, rows) // shard_rows).tolist()
    for index in touched:
        if not shard_path(index).is_file() and must_exist(index):
            raise DamagedShardFile(index, "is missing")
    try:
        if isinstance(rows, slice):
            return array[rows]
        order = np.argsort(rows, kind="stable")
        values = array.get_orthogonal_selection((rows[order],) + (slice(None),) * (array.ndim - 1))
    except (IndexError, TypeError):
        raise
    except Exception as error:  # a damaged object surfaces as any codec's error
        index = _undecodable_shard(array, touched, shard_rows)
        raise DamagedShardFile(index if index is not None else (touched[0] if touched else 0),
                               f"cannot be decoded ({type(error).__name__}: {error})") from error
    result = np.empty_like(values)
    result[order] = values
    return result


def _undecodable_shard(array: zarr.Array, shards: Sequence[int], shard_rows: int) -> int | None:
    """The first of `shards` that zarr fails to decode (the failing read covered several)."""
    for index in shards:
        try:
            array[index * shard_rows:min((index + 1) * shard_rows, array.shape[0])]
        except Exception:  # any codec's error marks the shard
            return index
    return None
