"""verify_store catches what would make a store untrustworthy, and store_summary describes it."""
import json
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore, StoreError, require_finite, store_summary, verify_store
from tests.cache_schema.conftest import shard_arrays


def test_complete_store_verifies(full_store: CacheStore) -> None:
    report = verify_store(full_store.path)
    assert report.ok, report.problems


def test_incomplete_store_names_missing_shards(empty_store: CacheStore) -> None:
    empty_store.write_shard(0, shard_arrays(empty_store, 0))
    report = verify_store(empty_store.path)
    assert not report.ok
    assert "2 of 3 shards incomplete" in report.problems[0] and "1, 2" in report.problems[0]


def test_corrupted_shard_object_is_caught(full_store: CacheStore) -> None:
    shard_file = full_store.path / "embedding" / "c" / "1" / "0"
    data = bytearray(shard_file.read_bytes())
    data[len(data) // 2 - 8: len(data) // 2 + 8] = b"\xff" * 16
    shard_file.write_bytes(bytes(data))
    report = verify_store(full_store.path)
    assert any("shard 1" in problem and "embedding" in problem for problem in report.problems), report.problems


def test_truncated_shard_object_is_caught(full_store: CacheStore) -> None:
    shard_file = full_store.path / "tokens" / "c" / "2" / "0" / "0"
    shard_file.write_bytes(shard_file.read_bytes()[:10])
    report = verify_store(full_store.path)
    assert any("shard 2" in problem and "tokens" in problem for problem in report.problems), report.problems


def test_nan_in_a_valid_row_is_caught(full_store: CacheStore) -> None:
    arrays = shard_arrays(full_store, 0)
    arrays[ArrayName.VIEWS][1, 0, 3] = np.nan
    full_store.write_shard(0, arrays)
    report = verify_store(full_store.path)
    assert any("non-finite" in problem and "views" in problem for problem in report.problems)


def test_provenance_missing_a_field_is_reported(full_store: CacheStore) -> None:
    metadata_file = full_store.path / "zarr.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["attributes"]["adaptor_vlp"]["provenance"]["weights_sha256"]
    metadata_file.write_text(json.dumps(metadata))
    report = verify_store(full_store.path)
    assert not report.ok and "weights_sha256" in report.problems[0]


def test_summary_counts_rows_splits_failures(empty_store: CacheStore, tmp_path: Path) -> None:
    for span in empty_store.shards():
        failed = {span.start: "unreadable image: file not found (files/p10/x.jpg)"} if span.index == 0 else {}
        empty_store.write_shard(span.index, shard_arrays(empty_store, span.index), failed)
    summary = store_summary(empty_store.path)
    assert summary["rows"] == 10 and summary["valid_rows"] == 9
    assert summary["splits"] == {"test": 2, "train": 6, "validate": 2}
    assert summary["failures"] == {"count": 1, "by_reason": {"unreadable image: file not found": 1}}
    assert summary["arrays"]["tokens"]["dims"] == ["sample", "token", "feature"]
    assert summary["provenance"]["backbone"] == "tiny-vit"


def test_require_finite_names_the_count_and_first_bad_sample(full_store: CacheStore, ids: list[str]) -> None:
    rows = np.array([2, 5, 7])
    values = np.ones((3, 4), dtype=np.float32)
    require_finite(full_store, rows, values, np.zeros((3, 2, 4)))
    values[1, 2] = np.inf
    values[2, 0] = np.nan
    with pytest.raises(StoreError, match=f"2 rows .* e.g. sample {ids[5]}"):
        require_finite(full_store, rows, values)
