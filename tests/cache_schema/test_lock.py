"""One run per output folder: the lock names its holder, refuses a second run, and is taken over when stale."""
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from adaptor_vlp.cache_schema.lock import FolderLock, FolderLocked, lock_path, read_holder


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_record(folder: Path, host: str, pid: int) -> None:
    lock_path(folder).write_text(json.dumps({"host": host, "pid": pid, "command": "adaptor extract images --x",
                                             "started": "2024-01-01T00:00:00+00:00"}))


def test_the_lock_records_its_holder_beside_the_folder_and_is_removed_on_release(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "store.zarr"
    with FolderLock.acquire(folder, "store") as lock:
        assert lock.path == tmp_path / "cache" / "store.zarr.lock" and lock.note is None
        holder = read_holder(lock.path)
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid()) and holder.started
    assert not lock.path.exists()


def test_a_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from adaptor_vlp.cache_schema.lock import FolderLock; "
         f"lock = FolderLock.acquire({str(tmp_path / 's.zarr')!r}, 'store'); print('held', flush=True); "
         "sys.stdin.read(); lock.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderLocked) as refused:
            FolderLock.acquire(tmp_path / "s.zarr", "store")
        assert f"another store run holds its lock {tmp_path / 's.zarr.lock'} (pid {holder.pid} on " \
               f"{socket.gethostname()}" in str(refused.value)
    finally:
        holder.communicate("")
    with FolderLock.acquire(tmp_path / "s.zarr", "store") as lock:
        assert lock.note is None  # the holder released it: nothing stale to report


def test_a_killed_holders_lock_is_taken_over_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    pid = _dead_pid()
    _write_record(folder, socket.gethostname(), pid)
    notes: list[str] = []
    with FolderLock.acquire(folder, "training", on_note=notes.append) as lock:
        assert read_holder(lock.path).pid == os.getpid()
    assert notes == [f"note: took over the lock {lock_path(folder)} of a training run that is gone (pid {pid} on "
                     f"{socket.gethostname()}, started 2024-01-01T00:00:00+00:00: adaptor extract images --x)"]


@pytest.fixture
def no_flock(monkeypatch) -> None:
    """A file system without flock (some network file systems): the holder's record decides."""
    def unsupported(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("fcntl.flock", unsupported)


def test_without_flock_a_live_or_remote_holder_is_refused_and_a_dead_local_one_taken_over(tmp_path, no_flock) -> None:
    folder = tmp_path / "s.zarr"
    _write_record(folder, socket.gethostname(), os.getppid())
    with pytest.raises(FolderLocked, match="cannot tell whether it still runs: if it is gone, delete"):
        FolderLock.acquire(folder, "store")
    _write_record(folder, "another-host", _dead_pid())
    with pytest.raises(FolderLocked, match="on another-host"):
        FolderLock.acquire(folder, "store")
    _write_record(folder, socket.gethostname(), _dead_pid())
    notes: list[str] = []
    with FolderLock.acquire(folder, "store", on_note=notes.append):
        assert len(notes) == 1 and "took over" in notes[0]
