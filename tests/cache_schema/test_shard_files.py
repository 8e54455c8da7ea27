"""The shard-file readers, alone: the direct one returns what zarr-python (and TensorStore) read from the same files."""
from pathlib import Path

import numpy as np
import pytest
import zarr

from adaptor_vlp.cache_schema.arrays import FeatureShape, create_arrays
from adaptor_vlp.cache_schema.layout import ArrayName
from adaptor_vlp.cache_schema.shard_files import DamagedShardFile, ShardFileReader, read_through_zarr

SHARD_ROWS = 8
CHUNK_ROWS = 2
N_ROWS = 21
"""Three shards, the last one partial, four inner chunks of two rows per shard."""


def _row_sharded(folder: Path, shape: tuple[int, ...], dtype: type, fill_value: object) -> zarr.Array:
    """An array in the store's layout: sharded by rows, raw little-endian inner chunks of whole rows."""
    return zarr.create_array(folder, shape=shape, dtype=dtype, chunks=(CHUNK_ROWS, *shape[1:]),
                             shards=(SHARD_ROWS, *shape[1:]), compressors=None, fill_value=fill_value,
                             zarr_format=3)


def _random_rows(rng: np.random.Generator) -> np.ndarray:
    """Row indices in any order, repeated, negative ones included."""
    return np.concatenate([rng.integers(0, N_ROWS, 12), [-1, -N_ROWS, 3, 3]])


@pytest.mark.parametrize(("shape", "dtype", "fill_value"), [
    ((N_ROWS, 5), np.float16, np.nan),
    ((N_ROWS, 3, 4), np.float16, np.nan),
    ((N_ROWS, 6), np.bool_, False),
    ((N_ROWS,), np.bool_, False),
])
def test_reads_what_zarr_reads_whole_by_range_and_by_rows(tmp_path: Path, shape: tuple[int, ...], dtype: type,
                                                          fill_value: object) -> None:
    rng = np.random.default_rng(0)
    array = _row_sharded(tmp_path / "array", shape, dtype, fill_value)
    values = rng.standard_normal(shape) > 0 if dtype is np.bool_ else rng.standard_normal(shape).astype(dtype)
    array[0:4] = values[0:4]  # shard 0 half written: its last two inner chunks are never written
    array[16:N_ROWS] = values[16:N_ROWS]  # shard 1 has no file at all
    assert not (tmp_path / "array" / "c" / "1").exists()
    reader = ShardFileReader.of(zarr.open_array(tmp_path / "array", mode="r"), tmp_path / "array")
    assert reader is not None
    np.testing.assert_array_equal(reader.read(None), array[:])
    for rows in (slice(3, 18), slice(5, 6), slice(16, None), slice(0, 0)):
        np.testing.assert_array_equal(reader.read(rows), array[rows])
    rows = _random_rows(rng)
    np.testing.assert_array_equal(reader.read(rows), array[:][rows])
    with pytest.raises(IndexError, match="lie outside"):
        reader.read(np.array([N_ROWS]))


def test_the_stores_own_feature_arrays_are_read_directly(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "store", mode="w", zarr_format=3)
    ids = [f"{i:03d}" for i in range(N_ROWS)]
    create_arrays(group, ids, ids, ["train"] * N_ROWS, FeatureShape(embedding_dim=6, token_count=3, token_dim=4),
                  SHARD_ROWS)
    rng = np.random.default_rng(1)
    tokens = group[ArrayName.TOKENS.value]
    tokens[:SHARD_ROWS] = rng.standard_normal((SHARD_ROWS, 3, 4)).astype(np.float16)
    for name in (ArrayName.EMBEDDING, ArrayName.TOKENS, ArrayName.TOKEN_MASK, ArrayName.VALID):
        array = group[name.value]
        reader = ShardFileReader.of(array, tmp_path / "store" / name.value)
        assert reader is not None, name
        np.testing.assert_array_equal(reader.read(slice(None)), array[:])
    assert ShardFileReader.of(group[ArrayName.ID.value], tmp_path / "store" / ArrayName.ID.value) is None


def test_a_range_of_huge_pages_is_read_into_a_buffer_on_a_huge_page_boundary(tmp_path: Path) -> None:
    """Ranges of 2 MiB or more land on a 2 MiB boundary (transparent huge pages: 1.45x faster copies on the AMD
    machine), with the same values and an ordinary array's behaviour; smaller ones are plain arrays."""
    shape = (40, 128, 256)  # 2.5 MiB of float16 in five shards of eight rows
    array = zarr.create_array(tmp_path / "big", shape=shape, dtype=np.float16, chunks=(CHUNK_ROWS, *shape[1:]),
                              shards=(SHARD_ROWS, *shape[1:]), compressors=None, fill_value=np.nan, zarr_format=3)
    array[:] = np.random.default_rng(2).standard_normal(shape).astype(np.float16)
    reader = ShardFileReader.of(zarr.open_array(tmp_path / "big", mode="r"), tmp_path / "big")
    whole = reader.read(None)
    assert whole.ctypes.data % 2**21 == 0 and whole.shape == shape and whole.flags.c_contiguous
    np.testing.assert_array_equal(whole, array[:])
    whole[0] = 0  # writable, like any array a read returns
    small = reader.read(slice(0, 2))
    np.testing.assert_array_equal(small, array[0:2])
    assert small.base is None


def test_a_compressed_array_is_left_to_zarr(tmp_path: Path) -> None:
    array = zarr.create_array(tmp_path / "array", shape=(N_ROWS, 4), dtype=np.float16, chunks=(CHUNK_ROWS, 4),
                              shards=(SHARD_ROWS, 4), fill_value=0, zarr_format=3)
    assert ShardFileReader.of(array, tmp_path / "array") is None


def test_tensorstore_writes_files_the_reader_reads(tmp_path: Path) -> None:
    tensorstore = pytest.importorskip("tensorstore")
    shape = (N_ROWS, 5)
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path / "array")},
        "metadata": {
            "shape": list(shape),
            "data_type": "float16",
            "fill_value": 0.0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [SHARD_ROWS, shape[1]]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [CHUNK_ROWS, shape[1]],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end",
            }}],
        },
        "create": True,
    }
    written = tensorstore.open(spec).result()
    values = np.random.default_rng(2).standard_normal(shape).astype(np.float16)
    written[0:12].write(values[0:12]).result()
    reader = ShardFileReader.of(zarr.open_array(tmp_path / "array", mode="r"), tmp_path / "array")
    assert reader is not None
    expected = written.read().result()
    np.testing.assert_array_equal(reader.read(None), expected)
    rows = _random_rows(np.random.default_rng(3))
    np.testing.assert_array_equal(reader.read(rows), expected[rows])


@pytest.fixture
def written(tmp_path: Path) -> zarr.Array:
    array = _row_sharded(tmp_path / "array", (N_ROWS, 4), np.float16, np.nan)
    array[:] = np.arange(N_ROWS * 4, dtype=np.float16).reshape(N_ROWS, 4)
    return array


def _shard_file(array: zarr.Array, shard: int) -> Path:
    return Path(array.store.root) / "c" / str(shard) / "0"


def test_a_truncated_shard_file_is_named_damaged(tmp_path: Path, written: zarr.Array) -> None:
    shard_file = _shard_file(written, 1)
    shard_file.write_bytes(shard_file.read_bytes()[:-3])
    reader = ShardFileReader.of(written, tmp_path / "array")
    with pytest.raises(DamagedShardFile, match="crc32c") as damage:
        reader.read(slice(None))
    assert (damage.value.shard, damage.value.problem) == (1, "has a shard index that fails its crc32c checksum")
    with pytest.raises(DamagedShardFile, match="crc32c"):
        reader.read(np.array([SHARD_ROWS + 1]))
    np.testing.assert_array_equal(reader.read(slice(0, SHARD_ROWS)), written[:SHARD_ROWS])
    shard_file.write_bytes(b"\0" * 10)
    with pytest.raises(DamagedShardFile, match="fewer than its shard index needs"):
        reader.read(slice(None))


def test_a_missing_shard_file_is_fill_unless_the_caller_says_it_must_exist(tmp_path: Path,
                                                                          written: zarr.Array) -> None:
    _shard_file(written, 2).unlink()
    expected = written[:]
    assert np.isnan(expected[2 * SHARD_ROWS:]).all()
    np.testing.assert_array_equal(ShardFileReader.of(written, tmp_path / "array").read(None), expected)
    reader = ShardFileReader.of(written, tmp_path / "array", must_exist=lambda shard: shard == 2)
    with pytest.raises(DamagedShardFile) as damage:
        reader.read(slice(SHARD_ROWS, None))
    assert (damage.value.shard, damage.value.problem) == (2, "is missing")
    with pytest.raises(DamagedShardFile, match="is missing"):
        reader.read(np.array([0, N_ROWS - 1]))


def test_zarr_reads_of_any_layout_name_the_shard_they_cannot_decode(tmp_path: Path) -> None:
    array = zarr.create_array(tmp_path / "array", shape=(N_ROWS, 4), dtype=np.float16, chunks=(CHUNK_ROWS, 4),
                              shards=(SHARD_ROWS, 4), fill_value=0, zarr_format=3)
    array[:] = np.arange(N_ROWS * 4, dtype=np.float16).reshape(N_ROWS, 4)

    def shard_path(shard: int) -> Path:
        return _shard_file(array, shard)

    rows = np.array([20, 0, 9, 9])
    np.testing.assert_array_equal(read_through_zarr(array, rows, SHARD_ROWS, shard_path), array[:][rows])
    np.testing.assert_array_equal(read_through_zarr(array, slice(2, 19), SHARD_ROWS, shard_path), array[2:19])
    damaged = _shard_file(array, 1)
    damaged.write_bytes(b"\xff" * len(damaged.read_bytes()))
    with pytest.raises(DamagedShardFile, match="cannot be decoded") as damage:
        read_through_zarr(array, slice(None), SHARD_ROWS, shard_path)
    assert damage.value.shard == 1
    np.testing.assert_array_equal(read_through_zarr(array, slice(0, SHARD_ROWS), SHARD_ROWS, shard_path),
                                  np.arange(SHARD_ROWS * 4, dtype=np.float16).reshape(SHARD_ROWS, 4))
    _shard_file(array, 2).unlink()
    assert (read_through_zarr(array, slice(2 * SHARD_ROWS, None), SHARD_ROWS, shard_path) == 0).all()
    with pytest.raises(DamagedShardFile, match="is missing") as damage:
        read_through_zarr(array, np.array([N_ROWS - 1]), SHARD_ROWS, shard_path, must_exist=lambda shard: True)
    assert damage.value.shard == 2
