"""One run per output folder: an advisory lock file beside the folder, naming who holds it.

A run that writes a store (extraction, `train embed`) or a training run folder takes the lock
`<folder>.lock` for its whole duration. The file holds the holder's host, pid, command and start
time (JSON), and the holder keeps an exclusive `flock` on it, which the kernel drops when the
process dies however it dies. A second run finds the lock held and refuses, naming the holder.
A lock file whose lock is free was left by a run that was killed: the next run takes it over
and says so. Where the file system has no `flock` (some network file systems), the holder's
record decides instead: a lock held on this host by a pid that no longer runs is taken over;
any other is refused, with the file to delete if its holder is known to be gone.

Only the process that starts a run takes the lock. Its Dask workers write their shards without
it: they are part of the holding run.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Callable

from adaptor_vlp.cache_schema.writes import writing

LOCK_SUFFIX = ".lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class FolderLocked(RuntimeError):
    """Another run holds the folder's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: enough for a person to find the run."""

    host: str
    pid: int
    command: str
    started: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"

    def gone(self) -> bool:
        """True when this holder is known to have stopped: same host, and its pid no longer runs."""
        return self.host == socket.gethostname() and not _pid_runs(self.pid)


def lock_path(folder: Path) -> Path:
    """The lock file of an output folder: `<folder>.lock`, beside it, so it exists before the folder does."""
    folder = Path(folder)
    return folder.with_name(folder.name + LOCK_SUFFIX)


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in a lock file, or None when there is no file or no readable record."""
    try:
        return _parse_holder(Path(path).read_bytes())
    except FileNotFoundError:
        return None


class FolderLock:
    """The lock of one output folder, held from `acquire` until `release` (or the end of a `with` block)."""

    def __init__(self, path: Path, descriptor: int, holder: LockHolder, note: str | None) -> None:
        self.path = path
        self.holder = holder
        self.note = note
        """A sentence saying whose stale lock was taken over, or None."""
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, folder: Path, what: str, on_note: Callable[[str], None] | None = None) -> FolderLock:
        """Takes the lock of `folder` (`what` names it in messages, e.g. "store"), or raises FolderLocked.

        `on_note` receives the note when a stale lock is taken over (default: printed on stderr).
        """
        path = lock_path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = LockHolder(socket.gethostname(), os.getpid(), _this_command(),
                            datetime.now(timezone.utc).isoformat(timespec="seconds"))
        while True:
            with writing(path):
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                kernel_lock = _lock_or_refuse(descriptor, path, folder, what)
                if _same_file(descriptor, path):
                    break
            except BaseException:
                os.close(descriptor)
                raise
            os.close(descriptor)  # a releasing run removed the file between our open and lock: open anew
        previous = _parse_holder(_read_all(descriptor))
        if previous is not None and not kernel_lock and not previous.gone():
            os.close(descriptor)
            raise FolderLocked(f"{folder}: another {what} run holds its lock {path} ({previous.describe()}); "
                               f"this file system cannot tell whether it still runs: if it is gone, delete {path}")
        note = None
        if previous is not None:
            note = f"note: took over the lock {path} of a {what} run that is gone ({previous.describe()})"
            (on_note or _print_note)(note)
        try:
            with writing(path):
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, (json.dumps(asdict(holder), indent=1) + "\n").encode("utf-8"), 0)
        except BaseException:
            os.close(descriptor)
            raise
        return cls(path, descriptor, holder, note)

    def release(self) -> None:
        """Removes the lock file and drops the lock; a second call does nothing."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _lock_or_refuse(descriptor: int, path: Path, folder: Path, what: str) -> bool:
    """Takes the kernel lock of the open file; False where the file system has none; FolderLocked when held."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _parse_holder(_read_all(descriptor))
        held_by = holder.describe() if holder else "a run that has not yet written its record"
        raise FolderLocked(f"{folder}: another {what} run holds its lock {path} ({held_by}); wait for it to "
                           "finish, or stop it, then run again") from None
    except OSError as error:
        if error.errno not in _NO_FLOCK:
            raise
        return False
    return True


def _same_file(descriptor: int, path: Path) -> bool:
    """True when `path` still names the open file (a releasing run may have removed it meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _read_all(descriptor: int) -> bytes:
    return os.pread(descriptor, 1 << 16, 0)


def _parse_holder(data: bytes) -> LockHolder | None:
    try:
        record = json.loads(data.decode("utf-8"))
        return LockHolder(str(record["host"]), int(record["pid"]), str(record["command"]), str(record["started"]))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _this_command() -> str:
    if not (sys.argv and sys.argv[0]):
        return f"python (pid {os.getpid()})"
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _print_note(note: str) -> None:
    print(note, file=sys.stderr)
