"""The arrays of a store: their shapes, rows per shard and per inner chunk, and how they are created in Zarr.

Every array is sharded by rows (Zarr v3 sharding codec, one object per shard); row metadata is
Blosc-compressed, feature arrays are stored raw so that `cache_schema.shard_files` can read them
straight from their shard files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from adaptor_vlp.cache_schema.ids import encode_ids
from adaptor_vlp.cache_schema.layout import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_SHARD_BYTES,
    DIMENSION_NAMES,
    FEATURE_MAP_ARRAYS,
    SPLIT_NAMES,
    ArrayName,
)

MAX_SHARD_ROWS = 4096
"""Upper bound on rows per shard, so that even small embeddings give many resumable units of work."""

FEATURE_MAP_CODEC = {"cname": "zstd", "clevel": 1, "shuffle": "shuffle", "typesize": 2}
"""Blosc settings of the feature maps: zstd level 1 on byte-shuffled float16. On seeded ResNet-AE-101 maps at
224 px it stored 1.14-1.69x smaller per level, near level 5's ratio at a fifth of its time (BENCHMARKS.md)."""

@dataclass(frozen=True)
class FeatureShape:
    """The feature arrays a store holds and their sizes."""

    embedding_dim: int
    token_count: int = 0
    token_dim: int = 0
    views: int = 0
    feature_maps: tuple[tuple[int, int, int], ...] = ()
    """(channels, height, width) of each intermediate map, finest first; empty: the store holds none."""

    def __post_init__(self) -> None:
        maps = tuple(tuple(int(size) for size in level) for level in self.feature_maps)
        if len(maps) not in (0, len(FEATURE_MAP_ARRAYS)) or any(len(level) != 3 for level in maps):
            raise ValueError(f"feature_maps must give (channels, height, width) for {len(FEATURE_MAP_ARRAYS)} "
                             f"levels, got {self.feature_maps}")
        object.__setattr__(self, "feature_maps", maps)

    def shapes(self, n_rows: int) -> dict[ArrayName, tuple[int, ...]]:
        """Shape of every feature array (and the token mask) for a store of n_rows rows."""
        shapes: dict[ArrayName, tuple[int, ...]] = {ArrayName.EMBEDDING: (n_rows, self.embedding_dim)}
        if self.token_count:
            shapes[ArrayName.TOKENS] = (n_rows, self.token_count, self.token_dim)
            shapes[ArrayName.TOKEN_MASK] = (n_rows, self.token_count)
        if self.views:
            shapes[ArrayName.VIEWS] = (n_rows, self.views, self.embedding_dim)
        for name, level in zip(FEATURE_MAP_ARRAYS, self.feature_maps):
            shapes[name] = (n_rows, *level)
        return shapes

    def row_bytes(self) -> int:
        """Bytes of the widest float16 array's row: it decides how many rows a shard holds."""
        return 2 * max(self.embedding_dim, self.token_count * self.token_dim, self.views * self.embedding_dim,
                       *(int(np.prod(level)) for level in self.feature_maps))

    def to_json(self) -> dict[str, Any]:
        """The sizes as the store's attribute block records them (`feature_maps` only where there are some)."""
        record: dict[str, Any] = {"embedding_dim": self.embedding_dim, "token_count": self.token_count,
                                  "token_dim": self.token_dim, "views": self.views}
        if self.feature_maps:
            record["feature_maps"] = [list(level) for level in self.feature_maps]
        return record


@dataclass(frozen=True)
class ShardSpan:
    """Rows [start, stop) of shard number `index`."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def default_shard_rows(features: FeatureShape) -> int:
    """Rows per shard so that the widest array's shard is near DEFAULT_SHARD_BYTES."""
    return int(np.clip(DEFAULT_SHARD_BYTES // features.row_bytes(), 1, MAX_SHARD_ROWS))


def _chunk_rows(shard_rows: int, row_bytes: int) -> int:
    """Largest divisor of shard_rows whose chunk stays under DEFAULT_CHUNK_BYTES (at least one row)."""
    limit = max(1, DEFAULT_CHUNK_BYTES // row_bytes)
    return max(d for d in range(1, shard_rows + 1) if shard_rows % d == 0 and d <= limit)


def array_names(features: FeatureShape) -> list[ArrayName]:
    """Every array a store of these features holds: the row metadata, then the feature arrays."""
    return [ArrayName.ID, ArrayName.GROUP_ID, ArrayName.SPLIT, ArrayName.VALID, *features.shapes(1)]


def create_arrays(
    group: zarr.Group,
    ids: Sequence[str],
    group_ids: Sequence[str],
    splits: Sequence[str],
    features: FeatureShape,
    shard_rows: int,
) -> None:
    """Creates every array of a new store in `group`: the row metadata written whole, the features empty."""
    n_rows = len(ids)
    id_rows = encode_ids(list(ids))
    _create_row_metadata_array(group, ArrayName.ID, id_rows, shard_rows)
    _create_row_metadata_array(group, ArrayName.GROUP_ID, encode_ids(list(group_ids)), shard_rows)
    split_codes = np.array([SPLIT_NAMES.index(s) for s in splits], dtype=np.uint8)
    _create_row_metadata_array(group, ArrayName.SPLIT, split_codes, shard_rows)
    _create_feature_array(group, ArrayName.VALID, (n_rows,), np.bool_, False, shard_rows, 1)
    row_bytes = features.row_bytes()
    for name, shape in features.shapes(n_rows).items():
        if name == ArrayName.TOKEN_MASK:
            _create_feature_array(group, name, shape, np.bool_, False, shard_rows, shape[1])
        elif name in FEATURE_MAP_ARRAYS:
            _create_feature_map_array(group, name, shape, shard_rows, 2 * int(np.prod(shape[1:])))
        else:
            _create_feature_array(group, name, shape, np.float16, np.nan, shard_rows, row_bytes)


def _create_row_metadata_array(group: zarr.Group, name: ArrayName, data: np.ndarray, shard_rows: int) -> None:
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


def _create_feature_array(
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


def _create_feature_map_array(group: zarr.Group, name: ArrayName, shape: tuple[int, ...], shard_rows: int,
                              row_bytes: int) -> None:
    """Creates one level of feature maps: float16, Blosc-compressed inner chunks of ~2 MiB.

    A map is megabytes per sample at the paper's sizes and, after a ReLU, partly zero, so it is compressed;
    there a chunk is one sample, so a random read of a few samples (a training batch) decodes no neighbour.
    Small maps (the demo's) share a chunk, since zarr's cost per chunk read then outweighs the bytes.
    """
    group.create_array(
        name.value,
        shape=shape,
        dtype=np.float16,
        chunks=(_chunk_rows(shard_rows, row_bytes), *shape[1:]),
        shards=(shard_rows, *shape[1:]),
        compressors=BloscCodec(**FEATURE_MAP_CODEC),
        dimension_names=DIMENSION_NAMES[name],
        fill_value=np.nan,
    )
