"""Writing output files so that a failed write is explained and never leaves a file that looks whole.

Every stage writes through these: a file appears under its final name only once all its bytes
are written (temporary file + rename), and an `OSError` while writing (a full disk, a quota, a
read-only or vanished folder) becomes one `WriteFailed` naming the file and the reason. The
caller adds what is complete and kept, and how to resume.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
}


class WriteFailed(RuntimeError):
    """An output could not be written; the message names the file, the reason, what is kept and what to do."""


def write_problem(path: Path, error: OSError) -> str:
    """'cannot write PATH: REASON (errno N)', the reason in words for the errors people meet."""
    reason = _REASONS.get(error.errno, error.strerror or type(error).__name__)
    code = f" (errno {error.errno})" if error.errno else ""
    return f"cannot write {path}: {reason}{code}"


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turns an OSError raised inside the block into WriteFailed naming `path`."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(write_problem(path, error)) from error


TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """Where `path`'s bytes are written before the rename: a hidden file beside it naming the writer's pid."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def remove_interrupted_writes(folder: Path, other_writers_suffixes: Sequence[str] = ()) -> list[Path]:
    """Deletes the temporary files under `folder` that a killed writer left behind; returns what it deleted.

    A process killed between creating a temporary file and renaming it (SIGKILL, power loss) cannot clean up;
    the file is not data, but it would stay beside the data for good. `other_writers_suffixes` names the
    temporary files of libraries that write into the folder too (Zarr's local store: '.partial').
    Call it only while holding the folder's lock (`cache_schema.lock`): a running writer's temporaries
    look the same.
    """
    folder = Path(folder)
    leftovers = [path for path in folder.rglob("*") if path.is_file() and (
        (path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX))
        or any(path.name.endswith(suffix) for suffix in other_writers_suffixes))]
    for path in leftovers:
        with writing(path):
            path.unlink(missing_ok=True)
    return leftovers


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Writes a file so that readers see either the old content or the whole new content, never a part."""
    write_atomically(path, lambda temporary: temporary.write_bytes(data))


def write_text_atomically(path: Path, text: str) -> None:
    """`write_bytes_atomically` for UTF-8 text."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_atomically(path: Path, fill: Callable[[Path], object]) -> None:
    """Lets `fill` write a temporary file beside `path`, then renames it into place.

    On any error the temporary file is removed, so a failed write leaves the previous file (or
    none); an OSError is raised as WriteFailed naming `path`.
    """
    path = Path(path)
    temporary = temporary_path(path)
    with writing(path):
        try:
            fill(temporary)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def write_together(files: Mapping[Path, bytes]) -> None:
    """Writes files that belong together (a checkpoint's tensors and the record naming their hash).

    Every file is written to a temporary file first; only when all are written are they renamed
    into place, in order. A failed write (a full disk) therefore leaves every previous file as it
    was, and raises WriteFailed naming the file that could not be written.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            temporary = temporary_path(path)
            staged.append((temporary, path))
            with writing(path):
                temporary.write_bytes(data)
        for temporary, path in staged:
            with writing(path):
                os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
