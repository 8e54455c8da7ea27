"""A complete shard's completion marker and its records: the rows, the failures, every array's object.

A writer drops a shard's marker only after every array's rows of that shard are written, so a
marker is the proof that a shard is complete; it records each object's size and SHA-256 so that
`cache_schema.verify` can tell a shard changed since.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from adaptor_vlp.cache_schema.layout import ArrayName


@dataclass(frozen=True)
class ShardFile:
    """One array's object of a complete shard as its marker records it: where, how many bytes, their SHA-256."""

    key: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, store: Path, key: str) -> "ShardFile | None":
        """The record of the object `key` as it is on disk now; None when there is no such object."""
        digest = hashlib.sha256()
        size = 0
        try:
            with open(Path(store) / key, "rb", buffering=0) as file:
                for block in iter(lambda: file.read(_DIGEST_BLOCK_BYTES), b""):
                    digest.update(block)
                    size += len(block)
        except FileNotFoundError:
            return None
        return cls(key, size, digest.hexdigest())

    def to_json(self) -> dict[str, Any]:
        return {"file": self.key, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> "ShardFile | None":
        return None if record is None else cls(record["file"], int(record["bytes"]), record["sha256"])


_DIGEST_BLOCK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class Failure:
    """A sample that could not be embedded, and why; its rows are masked out (valid=False, NaN)."""

    id: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its sample-specific detail (a path or count in trailing parentheses), for counting."""
        return self.reason.split(" (", 1)[0]


@dataclass(frozen=True)
class ShardMarker:
    """A complete shard's marker: its rows, its failures and, per array, its object's record.

    `files` maps every array to its ShardFile, or to None where no object was written (every inner
    chunk held the fill value, e.g. a token mask of a shard whose rows all failed). It is None
    for a marker written before markers carried checksums.
    """

    index: int
    start: int
    stop: int
    failures: tuple["Failure", ...]
    files: Mapping[ArrayName, ShardFile | None] | None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "shard": self.index,
            "start": self.start,
            "stop": self.stop,
            "failures": [{"id": f.id, "reason": f.reason} for f in self.failures],
        }
        if self.files is not None:
            document["files"] = {name.value: None if record is None else record.to_json()
                                 for name, record in self.files.items()}
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> "ShardMarker":
        files = document.get("files")
        return cls(
            index=int(document["shard"]),
            start=int(document["start"]),
            stop=int(document["stop"]),
            failures=tuple(Failure(**f) for f in document["failures"]),
            files=None if files is None else {ArrayName(n): ShardFile.from_json(r) for n, r in files.items()},
        )

