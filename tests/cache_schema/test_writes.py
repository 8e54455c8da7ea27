"""Output files appear whole or not at all, and a failed write names the file and the reason."""
import errno
from pathlib import Path

import pytest

from adaptor_vlp.cache_schema.writes import (
    WriteFailed,
    remove_interrupted_writes,
    temporary_path,
    write_atomically,
    write_text_atomically,
    write_together,
)


def _full_disk(path: Path) -> None:
    path.write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    write_text_atomically(target, "old")
    with pytest.raises(WriteFailed, match=f"cannot write {target}: no space left on the device \\(errno 28\\)"):
        write_atomically(target, _full_disk)
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_files_written_together_are_replaced_only_once_all_are_written(tmp_path: Path, monkeypatch) -> None:
    tensors, record = tmp_path / "last.safetensors", tmp_path / "last.json"
    write_together({tensors: b"tensors 1", record: b"record 1"})
    real_write_bytes = Path.write_bytes

    def second_file_fails(self: Path, data: bytes) -> int:
        if self.name.startswith(".last.json"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", second_file_fails)
    with pytest.raises(WriteFailed, match=f"cannot write {record}: disk quota exceeded"):
        write_together({tensors: b"tensors 2", record: b"record 2"})
    assert (tensors.read_bytes(), record.read_bytes()) == (b"tensors 1", b"record 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_only_the_temporaries_of_unfinished_writes_are_removed(tmp_path: Path) -> None:
    kept = [tmp_path / "notes.tmp", tmp_path / ".settings", tmp_path / "a" / "data.partial.json"]
    left = [temporary_path(tmp_path / "a" / "record.json"), tmp_path / "a" / "0.3f2a.partial"]
    for path in kept + left:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert sorted(remove_interrupted_writes(tmp_path, (".partial",))) == sorted(left)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
