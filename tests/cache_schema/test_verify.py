"""verify_store catches what would make a store untrustworthy, and store_summary describes it."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from adaptor_vlp.cache_schema import ArrayName, CacheStore, StoreError, require_finite, store_summary, verify_store
from adaptor_vlp.cache_schema.verify import ProblemKind
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


def _flip_a_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_markers_record_each_array_object_size_and_sha256_and_hold_no_timestamp(full_store: CacheStore) -> None:
    marker = json.loads((full_store.path / "_shards" / "000001.json").read_text())
    embedding = marker["files"]["embedding"]
    shard_file = full_store.path / "embedding" / "c" / "1" / "0"
    assert embedding == {"file": "embedding/c/1/0", "bytes": shard_file.stat().st_size,
                         "sha256": hashlib.sha256(shard_file.read_bytes()).hexdigest()}
    assert set(marker["files"]) == {"id", "group_id", "split", "valid", "embedding", "tokens", "token_mask", "views"}
    assert set(marker) == {"shard", "start", "stop", "failures", "files"}


def test_changed_bytes_of_the_same_length_are_caught_by_the_digest_not_by_quick(full_store: CacheStore) -> None:
    _flip_a_byte(full_store.path / "views" / "c" / "1" / "0" / "0")
    assert verify_store(full_store.path, quick=True).ok
    report = verify_store(full_store.path)
    assert report.damaged_shards == [1]
    [problem] = report.problems
    assert problem.startswith("shard 1 (rows 4-7), array 'views': views/c/1/0/0 content changed since its marker "
                              "was written (SHA-256 ")


def test_a_truncated_object_is_caught_by_quick_too(full_store: CacheStore) -> None:
    shard_file = full_store.path / "embedding" / "c" / "2" / "0"
    size = shard_file.stat().st_size
    shard_file.write_bytes(shard_file.read_bytes()[:size // 2])
    report = verify_store(full_store.path, quick=True)
    assert report.damaged_shards == [2]
    assert f"shard 2 (rows 8-9), array 'embedding': embedding/c/2/0 holds {size // 2} bytes where its marker " \
           f"records {size}" in report.problems[0]


def test_damaged_row_metadata_is_not_repairable_by_a_rewrite(full_store: CacheStore) -> None:
    _flip_a_byte(full_store.path / "id" / "c" / "0" / "0", offset=2)
    report = verify_store(full_store.path)
    assert report.damaged_shards == [] and not report.ok
    assert "array 'id'" in report.problems[0] and "--overwrite" in report.problems[0]


def test_markers_without_checksums_are_noted_not_failed(full_store: CacheStore) -> None:
    for marker_file in (full_store.path / "_shards").glob("*.json"):
        marker = json.loads(marker_file.read_text())
        del marker["files"]
        marker_file.write_text(json.dumps(marker))
    report = verify_store(full_store.path)
    assert report.ok and "3 shards' markers predate checksums" in report.notes[0]


def test_a_damaged_validity_shard_is_repairable_like_any_per_shard_array(full_store: CacheStore) -> None:
    valid_file = full_store.path / "valid" / "c" / "1"
    valid_file.write_bytes(valid_file.read_bytes()[:-2])
    report = verify_store(full_store.path)
    assert report.damaged_shards == [1] and report.of_kind(ProblemKind.STORE) == []
    assert "shard 1 (rows 4-7), array 'valid': valid/c/1 holds" in report.problems[0]
