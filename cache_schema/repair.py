"""Turning a store's damaged shards back into incomplete ones, so the writing command redoes only those.

`repair_store` verifies the store in full (every digest recomputed) and, for each shard whose
problem a rewrite fixes, removes the shard's completion marker and then its per-shard objects
(`valid` and the feature arrays; the row metadata is the manifest's and stays). The data is
deleted rather than kept for inspection: verify has already said what differed, a resumed run
rewrites the shard whole, and damaged bytes left beside good ones are what a reader must never
take for data. The marker goes first, so a repair interrupted half way leaves an incomplete
shard, never a complete-looking one. The repair holds the store's lock, so it cannot race a run
writing the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adaptor_vlp.cache_schema.layout import PER_SHARD_ARRAYS
from adaptor_vlp.cache_schema.lock import FolderLock
from adaptor_vlp.cache_schema.store import CacheStore
from adaptor_vlp.cache_schema.verify import ProblemKind, VerifyReport, verify_store


@dataclass(frozen=True)
class RepairOutcome:
    """What a repair did: the shards it marked incomplete, and the problems a rewrite cannot fix."""

    path: str
    report: VerifyReport
    shards_marked_incomplete: list[int] = field(default_factory=list)

    @property
    def unrepairable(self) -> list[str]:
        """Problems a rewrite of shards cannot fix: the store must be rebuilt or put right by hand."""
        return self.report.of_kind(ProblemKind.STORE)

    @property
    def incomplete(self) -> list[str]:
        """Shards still to be written by the command that writes the store (no repair needed)."""
        return self.report.of_kind(ProblemKind.INCOMPLETE)


def repair_store(path: Path) -> RepairOutcome:
    """Marks every damaged shard of the store incomplete and removes its per-shard data."""
    path = Path(path)
    with FolderLock.acquire(path, "store"):
        report = verify_store(path)
        damaged = report.damaged_shards
        if damaged:
            store = CacheStore.open(path, writable=True)
            for index in damaged:
                store.marker_path(index).unlink(missing_ok=True)
                for name in PER_SHARD_ARRAYS:
                    store.shard_file(name, index).unlink(missing_ok=True)
    return RepairOutcome(str(path), report, damaged)
