"""One extraction run from start to summary: resume or refuse, schedule the shards, report progress."""
from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.text import Text

from adaptor_vlp.cache_schema import CacheStore, ShardSpan, dataset_dir
from adaptor_vlp.cache_schema.cluster import Scheduler, parse_scheduler, run_on_dask
from adaptor_vlp.cache_schema.lock import FolderLock
from adaptor_vlp.cache_schema.writes import WriteFailed
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.extract.pipeline import (
    Encoder, StoreRows, extract_shards, load_encoder, open_store, resolve_image_root, run_shard_task, store_rows,
)


@dataclass
class ExtractionSummary:
    """What a run did: shards written and skipped, rows embedded, failures by reason, time."""

    store: Path
    rows: int
    shards_total: int
    shards_skipped: int
    rows_done: int = 0
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_done / self.seconds if self.seconds else 0.0

    def final_line(self) -> str:
        """One line with counts, throughput and where the store is (no report text, ever)."""
        written = self.shards_total - self.shards_skipped
        if not written:
            return f"nothing to do: all {self.shards_total} shards of {self.store} are complete ({self.rows} rows)"
        failed = sum(self.failures.values())
        return (f"done: {self.rows_done} rows in {written} shards ({self.shards_skipped} already complete), "
                f"{failed} skipped, {self.seconds:.1f} s, {self.rows_per_second:.1f} rows/s -> {self.store}")


def run_extraction(job: ExtractionJob, overwrite: bool = False, scheduler: str = "none",
                   console: Console | None = None) -> ExtractionSummary:
    """Embeds every incomplete shard of the job's store; a complete store is left untouched.

    The run holds the store's lock throughout (`cache_schema.lock`): a second run on the same
    store is refused with FolderLocked naming this one; the shard tasks it places on Dask workers
    write without taking it. A failed write (a full disk) stops the run with WriteFailed saying
    how many shards are complete and kept and that the same command resumes.
    """
    console = console or Console(stderr=True)
    placement = parse_scheduler(scheduler)
    manifest_folder = dataset_dir(job.cache_dir, job.dataset)
    manifest = read_manifest(manifest_folder)
    rows = store_rows(manifest, job.modality)
    with FolderLock.acquire(job.store, "store", on_note=lambda note: console.print(note, markup=False, soft_wrap=True)):
        encoder = load_encoder(job)
        store = open_store(job, encoder, manifest_folder, rows, overwrite=overwrite)
        pending = store.incomplete_shards()
        summary = ExtractionSummary(store.path, store.n_rows, len(store.shards()), len(store.shards()) - len(pending))
        if pending:
            started = time.perf_counter()
            try:
                with _progress(console) as progress:
                    task = progress.add_task(f"{job.modality.value} {job.backbone}",
                                             total=sum(s.stop - s.start for s in pending))
                    _run_pending(job, encoder, store, rows, resolve_image_root(job, manifest), pending, placement,
                                 on_rows=lambda n: progress.advance(task, n))
            except WriteFailed as error:
                raise store.write_stopped(error) from error
            summary.seconds = time.perf_counter() - started
            summary.rows_done = sum(s.stop - s.start for s in pending)
        summary.failures = Counter(f.kind for f in CacheStore.open(store.path).failures())
    return summary


def _run_pending(job: ExtractionJob, encoder: Encoder, store: CacheStore, rows: StoreRows, image_root: Path, pending: list[ShardSpan],
                 scheduler: Scheduler, on_rows: Callable[[int], None]) -> None:
    if scheduler.in_process:
        extract_shards(job, encoder, store, rows, image_root, pending,
                       on_shard_done=lambda span, failures: None, on_batch_done=on_rows)
        return
    for span, _ in run_on_dask(scheduler, functools.partial(run_shard_task, job), pending):
        on_rows(span.stop - span.start)


class _RateColumn(ProgressColumn):
    """Samples per second, measured over the last few updates."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0.0:7.1f} samples/s")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
