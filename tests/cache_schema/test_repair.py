"""Repair turns damaged shards into incomplete ones; rewriting them restores the store byte for byte."""
import shutil
from pathlib import Path

import pytest

from adaptor_vlp.cache_schema import CacheStore, FolderLock, FolderLocked, repair_store, verify_store
from tests.cache_schema.conftest import shard_arrays


def _files(store: Path) -> dict[str, bytes]:
    """Every shard object and completion marker (zarr.json holds the creation time, so it is left out)."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


def test_repair_then_rewrite_gives_back_the_clean_store(full_store: CacheStore, tmp_path: Path) -> None:
    clean = _files(full_store.path)
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(full_store.path, damaged)
    views = damaged / "views" / "c" / "0" / "0" / "0"
    data = bytearray(views.read_bytes())
    data[5] ^= 0xFF
    views.write_bytes(bytes(data))
    (damaged / "embedding" / "c" / "2" / "0").write_bytes(b"short")

    outcome = repair_store(damaged)

    assert outcome.shards_marked_incomplete == [0, 2] and not outcome.unrepairable
    store = CacheStore.open(damaged, writable=True)
    assert [span.index for span in store.incomplete_shards()] == [0, 2]
    assert not (damaged / "views" / "c" / "0" / "0" / "0").exists()
    for span in store.incomplete_shards():
        store.write_shard(span.index, shard_arrays(store, span.index))
    assert _files(damaged) == clean and verify_store(damaged).ok


def test_repair_refuses_while_a_run_holds_the_store(full_store: CacheStore) -> None:
    with FolderLock.acquire(full_store.path, "store"):
        with pytest.raises(FolderLocked):
            repair_store(full_store.path)
