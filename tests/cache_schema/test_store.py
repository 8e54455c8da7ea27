"""Round trips, resumable shards, failures and concurrent writers of a cache store."""
import errno
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import (
    ArrayName,
    CacheStore,
    DamagedStore,
    FeatureShape,
    ProvenanceMismatch,
    StoreError,
    WriteFailed,
)
from tests.cache_schema.conftest import FEATURES, SHARD_ROWS, make_provenance, shard_arrays


def test_round_trip_keeps_values_ids_and_splits(full_store: CacheStore, ids: list[str]) -> None:
    reopened = CacheStore.open(full_store.path)
    assert list(reopened.ids) == ids
    assert reopened.splits.tolist() == ["train"] * 6 + ["validate"] * 2 + ["test"] * 2
    assert reopened.group_ids[3] == "50000001"
    expected = np.concatenate([shard_arrays(full_store, s.index)[ArrayName.EMBEDDING] for s in full_store.shards()])
    stored = reopened.read(ArrayName.EMBEDDING)
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, expected.astype(np.float16))
    assert reopened.valid.all()


def test_read_by_ids_returns_rows_in_the_order_asked(full_store: CacheStore, ids: list[str]) -> None:
    everything = full_store.read(ArrayName.TOKENS)
    picked = full_store.read_by_ids(ArrayName.TOKENS, [ids[9], ids[0], ids[5]])
    np.testing.assert_array_equal(picked, everything[[9, 0, 5]])
    with pytest.raises(KeyError, match="not-an-id"):
        full_store.read_by_ids(ArrayName.EMBEDDING, ["not-an-id"])


def test_incomplete_shards_are_listed_until_their_marker_is_written(empty_store: CacheStore) -> None:
    assert [s.index for s in empty_store.incomplete_shards()] == [0, 1, 2]
    empty_store.write_shard(1, shard_arrays(empty_store, 1))
    assert [s.index for s in empty_store.incomplete_shards()] == [0, 2]
    assert [(s.start, s.stop) for s in empty_store.shards()] == [(0, 4), (4, 8), (8, 10)]
    assert not empty_store.is_complete
    assert np.isnan(empty_store.read(ArrayName.EMBEDDING, slice(0, 4))).all(), "unwritten rows must read as NaN"


def test_failed_rows_are_masked_nan_and_recorded(empty_store: CacheStore, ids: list[str]) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0), {2: "unreadable image: truncated JPEG"})
    assert empty_store.valid[:4].tolist() == [True, True, False, True]
    assert np.isnan(empty_store.read(ArrayName.EMBEDDING, slice(2, 3))).all()
    assert not empty_store.read(ArrayName.TOKEN_MASK, slice(2, 3)).any()
    [failure] = empty_store.failures()
    assert (failure.id, failure.reason) == (ids[2], "unreadable image: truncated JPEG")


def test_write_shard_refuses_wrong_shapes_and_missing_arrays(empty_store: CacheStore) -> None:
    arrays = shard_arrays(empty_store, 0)
    with pytest.raises(StoreError, match="views"):
        empty_store.write_shard(0, {k: v for k, v in arrays.items() if k != ArrayName.VIEWS})
    arrays[ArrayName.EMBEDDING] = arrays[ArrayName.EMBEDDING][:, :4]
    with pytest.raises(StoreError, match="embedding"):
        empty_store.write_shard(0, arrays)
    assert empty_store.complete_shard_indices() == set()


def test_provenance_mismatch_names_field_expected_and_found(full_store: CacheStore) -> None:
    with pytest.raises(ProvenanceMismatch) as caught:
        CacheStore.open(full_store.path, expect={"backbone": "dinov2-s"})
    assert caught.value.field_name == "backbone"
    assert "dinov2-s" in str(caught.value) and "tiny-vit" in str(caught.value)
    with pytest.raises(ProvenanceMismatch, match="'preprocessing.size' differs: expected 224, found 64"):
        CacheStore.open(full_store.path, expect={"preprocessing": {"size": 224, "mean": [0.5]}})
    CacheStore.open(full_store.path, expect={"backbone": "tiny-vit", "preprocessing": {"mean": [0.5], "size": 64}})


def test_create_or_resume_reuses_a_matching_store_and_refuses_other_settings(full_store: CacheStore,
                                                                             ids: list[str]) -> None:
    args = (ids, list(full_store.group_ids), list(full_store.splits), FEATURES)
    resumed = CacheStore.create_or_resume(full_store.path, make_provenance(), *args)
    assert resumed.is_complete
    with pytest.raises(ProvenanceMismatch, match="weights_sha256"):
        CacheStore.create_or_resume(full_store.path, make_provenance(weights_sha256="c" * 64), *args)
    with pytest.raises(StoreError, match="features"):
        CacheStore.create_or_resume(full_store.path, make_provenance(), *args[:3], FeatureShape(embedding_dim=8))


def test_resuming_deletes_the_temporary_files_a_killed_writer_left(empty_store: CacheStore, ids: list[str]) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0))
    files_before = _files(empty_store.path)
    killed_mid_write = [empty_store.path / "embedding/c/1/0.5f0e2c1d9a8b4c3d.partial",
                        empty_store.path / "_shards/.000001.json.4242.tmp"]
    for leftover in killed_mid_write:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half a write")
    args = (ids, list(empty_store.group_ids), list(empty_store.splits), FEATURES)
    resumed = CacheStore.create_or_resume(empty_store.path, make_provenance(), *args)
    assert _files(resumed.path) == files_before
    assert resumed.complete_shard_indices() == {0}


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_create_refuses_duplicate_ids_and_unknown_splits(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="repeated"):
        CacheStore.create(tmp_path / "a.zarr", make_provenance(), ["x", "x"], ["s", "s"], ["train"] * 2,
                          FeatureShape(4))
    with pytest.raises(StoreError, match="valid"):
        CacheStore.create(tmp_path / "b.zarr", make_provenance(), ["x"], ["s"], ["valid"], FeatureShape(4))
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_open_names_the_path_when_no_store_is_there(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path / "missing.zarr")):
        CacheStore.open(tmp_path / "missing.zarr")


def _write_shards(path: str, indices: list[int]) -> None:
    store = CacheStore.open(Path(path), writable=True)
    for index in indices:
        store.write_shard(index, shard_arrays(store, index))


def test_two_processes_writing_different_shards_lose_nothing(tmp_path: Path) -> None:
    n_rows = 40 * SHARD_ROWS
    store = CacheStore.create(tmp_path / "s.zarr", make_provenance(), [f"id{i}" for i in range(n_rows)],
                              [f"g{i}" for i in range(n_rows)], ["train"] * n_rows, FEATURES, shard_rows=SHARD_ROWS)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_shards, args=(str(store.path), list(range(k, 40, 2)))) for k in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    expected = np.concatenate([shard_arrays(store, s.index)[ArrayName.VIEWS] for s in store.shards()])
    np.testing.assert_array_equal(store.read(ArrayName.VIEWS), expected.astype(np.float16))
    assert store.is_complete and store.valid.all()


def test_direct_shard_reads_equal_zarr_reads_for_slices_rows_and_unwritten_shards(empty_store: CacheStore) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0), {1: "unreadable image: truncated"})
    empty_store.write_shard(2, shard_arrays(empty_store, 2))
    rng = np.random.default_rng(0)
    selections = [None, slice(0, 10), slice(3, 9), slice(4, 8), slice(9, 10),
                  *(rng.integers(0, 10, size=7) for _ in range(5))]
    for name in (ArrayName.EMBEDDING, ArrayName.TOKENS, ArrayName.VIEWS, ArrayName.TOKEN_MASK, ArrayName.VALID):
        through_zarr = empty_store.zarr_array(name)[:]
        for rows in selections:
            expected = through_zarr if rows is None else through_zarr[rows]
            np.testing.assert_array_equal(empty_store.read(name, rows), expected, err_msg=f"{name} {rows}")


def _multi_chunk_store(path: Path) -> CacheStore:
    """Tokens of 1 MiB a row, 4 rows a shard: each shard file holds two inner chunks of 2 rows."""
    features = FeatureShape(embedding_dim=8, token_count=512, token_dim=1024)
    store = CacheStore.create(path, make_provenance(), [f"id{i}" for i in range(10)], [f"g{i}" for i in range(10)],
                              ["train"] * 10, features, shard_rows=4)
    rng = np.random.default_rng(0)
    for span in store.shards():
        n = span.stop - span.start
        arrays = {ArrayName.EMBEDDING: rng.standard_normal((n, 8), dtype=np.float32),
                  ArrayName.TOKENS: rng.standard_normal((n, 512, 1024), dtype=np.float32),
                  ArrayName.TOKEN_MASK: np.ones((n, 512), dtype=bool)}
        failed = {4: "unreadable image: x", 5: "unreadable image: y"} if span.index == 1 else {}
        store.write_shard(span.index, arrays, failed)
    return store


def test_a_range_read_issues_one_read_per_run_of_adjacent_inner_chunks(tmp_path: Path, monkeypatch) -> None:
    store = _multi_chunk_store(tmp_path / "s.zarr")
    through_zarr = store.zarr_array(ArrayName.TOKENS)[:]
    reads: list[int] = []
    real_preadv = __import__("os").preadv

    def counting_preadv(descriptor, buffers, position):
        reads.append(position)
        return real_preadv(descriptor, buffers, position)

    monkeypatch.setattr("os.preadv", counting_preadv)
    for rows in (None, slice(1, 7), slice(0, 4), slice(5, 10), slice(3, 3)):
        reads.clear()
        expected = through_zarr if rows is None else through_zarr[rows]
        np.testing.assert_array_equal(store.read(ArrayName.TOKENS, rows), expected, err_msg=str(rows))
        if rows is None:
            # shard 0: chunks 0-1 in one read; shard 1: chunk 2 is all failed rows (NaN, never written), so
            # only chunk 3 is read; shard 2: one chunk of two rows. Three reads where per-chunk reading took four.
            assert len(reads) == 3, reads
    assert store.shards()[1].start == 4
    assert np.isnan(store.read(ArrayName.TOKENS, slice(4, 6))).all()


def test_reading_a_truncated_shard_names_store_shard_rows_and_remedy(full_store: CacheStore) -> None:
    shard_file = full_store.path / "embedding" / "c" / "1" / "0"
    shard_file.write_bytes(shard_file.read_bytes()[:-7])
    with pytest.raises(DamagedStore) as caught:
        full_store.read(ArrayName.EMBEDDING)
    message = str(caught.value)
    assert message.startswith(f"{full_store.path}: shard 1 (rows 4-7) of array 'embedding': embedding/c/1/0 ")
    assert f"adaptor cache verify {full_store.path}" in message and f"adaptor cache repair {full_store.path}" in message
    np.testing.assert_array_equal(full_store.read(ArrayName.EMBEDDING, slice(0, 4)),
                                  shard_arrays(full_store, 0)[ArrayName.EMBEDDING].astype(np.float16))


def test_a_missing_object_of_a_complete_shard_is_an_error_of_an_incomplete_one_the_fill(empty_store) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0))
    assert np.isnan(empty_store.read(ArrayName.TOKENS, slice(4, 8))).all()
    (empty_store.path / "tokens" / "c" / "0" / "0" / "0").unlink()
    with pytest.raises(DamagedStore, match=r"shard 0 \(rows 0-3\) of array 'tokens': tokens/c/0/0/0 is missing"):
        empty_store.read(ArrayName.TOKENS, np.array([2]))


def test_damaged_row_metadata_names_the_array_instead_of_a_codec_error(full_store: CacheStore) -> None:
    id_file = full_store.path / "id" / "c" / "2" / "0"
    id_file.write_bytes(id_file.read_bytes()[:-3])
    with pytest.raises(DamagedStore, match=r"shard 2 \(rows 8-9\) of array 'id': id/c/2/0 cannot be decoded .*repair"):
        _ = CacheStore.open(full_store.path).ids  # reading the ids decodes the damaged shard


def test_a_failed_shard_write_names_the_file_and_leaves_the_shard_incomplete(empty_store, monkeypatch) -> None:
    def full_disk(path, value, exclusive=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("zarr.storage._local._put", full_disk)
    with pytest.raises(WriteFailed, match=r"cannot write .*embedding/c/1/0: no space left on the device \(errno 28\)"):
        empty_store.write_shard(1, shard_arrays(empty_store, 1))
    assert empty_store.complete_shard_indices() == set()
