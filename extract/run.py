"""One extraction run from start to summary: resume or refuse, schedule the shards, report progress.

A run is an `ExtractionPass`: one store, or several image stores filled in one pass over the
images. Each store resumes on its own: a shard is embedded for exactly the stores that lack it,
so a killed pass leaves each store at its own last complete shard and the rerun finishes each.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from adaptor_vlp.cache_schema import CacheStore, StoreError, dataset_dir
from adaptor_vlp.cache_schema.arrays import default_shard_rows
from adaptor_vlp.cache_schema.cluster import Scheduler, parse_scheduler, run_on_dask
from adaptor_vlp.cache_schema.lock import FolderLock
from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.cache_schema.writes import WriteFailed
from adaptor_vlp.extract.job import ExtractionJob, ExtractionPass
from adaptor_vlp.extract.pipeline import (
    Encoder,
    PendingShard,
    StoreRows,
    Target,
    extract_shards,
    load_encoder,
    open_store,
    resolve_image_root,
    run_shard_task,
    store_features,
    store_rows,
)


@dataclass
class ExtractionSummary:
    """What a run did to one store: shards written and skipped, rows embedded, failures by reason, time."""

    store: Path
    rows: int
    shards_total: int
    shards_skipped: int
    rows_done: int = 0
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    """Seconds of the whole pass that wrote this store (shared by every store of a multi-backbone pass)."""

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
    return run_multi_extraction([job], overwrite=overwrite, scheduler=scheduler, console=console)[0]


def run_multi_extraction(jobs: Sequence[ExtractionJob], overwrite: bool = False, scheduler: str = "none",
                         console: Console | None = None) -> list[ExtractionSummary]:
    """Fills several image stores of one dataset in one pass: each image decoded once, for every backbone.

    `jobs` differ only in backbone (and weights); `ExtractionPass.of` checks them (PassError,
    UnknownBackbone) and fixes the decode size: the jobs' `decode_size`, else what the largest
    input among the backbones needs (full resolution if any backbone's steps average areas).
    Each store is the store `run_extraction` writes for its job at that decode size, byte for byte,
    and resumes on its own. All stores share one shard plan: `shard_rows`, else that of the stores
    already there, else the smallest default among them. The run holds every store's lock.
    Returns one summary per job, in order.
    """
    console = console or Console(stderr=True)
    placement = parse_scheduler(scheduler)
    extraction = ExtractionPass.of(jobs)
    settings = extraction.settings
    manifest_folder = dataset_dir(settings.cache_dir, settings.dataset)
    manifest = read_manifest(manifest_folder)
    rows = store_rows(manifest, settings.modality)
    with ExitStack() as held:
        for job in extraction.jobs:
            held.enter_context(FolderLock.acquire(
                job.store, "store", on_note=lambda note: console.print(note, markup=False, soft_wrap=True)))
        encoders = [load_encoder(job) for job in extraction.jobs]
        extraction = _with_shard_plan(extraction, encoders, overwrite)
        targets = [Target(job, encoder, open_store(job, encoder, manifest_folder, rows, overwrite=overwrite))
                   for job, encoder in zip(extraction.jobs, encoders)]
        pending = pending_shards([target.store for target in targets])
        summaries = [_summary_before(target.store) for target in targets]
        rows_left = [_rows_left(target.store) for target in targets]
        if pending:
            started = time.perf_counter()
            try:
                with _progress(console) as progress:
                    bars = {target.store.path: progress.add_task(
                        f"{target.job.modality.value} {target.job.backbone}", total=left)
                        for target, left in zip(targets, rows_left)}
                    _run_pending(extraction, targets, rows, resolve_image_root(settings, manifest), pending,
                                 placement, on_rows=lambda target, n: progress.advance(bars[target.store.path], n))
            except WriteFailed as error:
                raise _write_stopped([target.store for target in targets], error) from error
            seconds = time.perf_counter() - started
            for summary, left in zip(summaries, rows_left):
                summary.seconds, summary.rows_done = seconds, left
        for summary in summaries:
            summary.failures = Counter(f.kind for f in CacheStore.open(summary.store).failures())
    return summaries


def pending_shards(stores: Sequence[CacheStore]) -> list[PendingShard]:
    """Every shard some store lacks, in order, with the positions of the stores that lack it.

    The stores share one shard plan; a shard complete in every store is not listed.
    """
    missing = [{span.index for span in store.incomplete_shards()} for store in stores]
    return [PendingShard(span, tuple(position for position, lacking in enumerate(missing) if span.index in lacking))
            for span in stores[0].shards() if any(span.index in lacking for lacking in missing)]


def _summary_before(store: CacheStore) -> ExtractionSummary:
    skipped = len(store.shards()) - len(store.incomplete_shards())
    return ExtractionSummary(store.path, store.n_rows, len(store.shards()), skipped)


def _rows_left(store: CacheStore) -> int:
    return sum(span.stop - span.start for span in store.incomplete_shards())


def _with_shard_plan(extraction: ExtractionPass, encoders: Sequence[Encoder], overwrite: bool) -> ExtractionPass:
    """The pass with its one shard plan in every job: the jobs' own, else the existing stores', else the smallest
    default.

    One plan keeps every backbone's batches the same fixed row ranges a single-backbone run uses.
    """
    if extraction.settings.shard_rows is not None:
        return extraction
    existing = {job.store: CacheStore.open(job.store).shard_rows
                for job in extraction.jobs if job.store.exists() and not overwrite}
    if len(set(existing.values())) > 1:
        described = ", ".join(f"{path} has {rows}" for path, rows in existing.items())
        raise StoreError(f"one pass writes all its stores with one shard plan, but their rows per shard differ "
                         f"({described}); extract these backbones in separate runs, or pass --overwrite")
    if existing:
        shard_rows = next(iter(existing.values()))
    else:
        shard_rows = min(default_shard_rows(store_features(job, encoder))
                         for job, encoder in zip(extraction.jobs, encoders))
    return ExtractionPass(tuple(dataclasses.replace(job, shard_rows=shard_rows) for job in extraction.jobs))


def _run_pending(extraction: ExtractionPass, targets: Sequence[Target], rows: StoreRows, image_root: Path,
                 pending: list[PendingShard], scheduler: Scheduler, on_rows: Callable[[Target, int], None]) -> None:
    """Embeds the pending shards: in this process, one reader per set of stores lacking the same shards; or on Dask."""
    if scheduler.in_process:
        by_stores = sorted(pending, key=lambda shard: (shard.jobs, shard.span.index))
        for positions, shards in itertools.groupby(by_stores, key=lambda shard: shard.jobs):
            extract_shards([targets[position] for position in positions], rows, image_root,
                           [shard.span for shard in shards], on_batch_done=on_rows)
        return
    for shard, _ in run_on_dask(scheduler, functools.partial(run_shard_task, extraction), pending):
        for position in shard.jobs:
            on_rows(targets[position], shard.span.stop - shard.span.start)


def _write_stopped(stores: Sequence[CacheStore], error: WriteFailed) -> WriteFailed:
    """The error of a pass whose write failed, with what of each store is kept and how to resume."""
    if len(stores) == 1:
        return stores[0].write_stopped(error)
    kept = "; ".join(f"{len(store.complete_shard_indices())} of {len(store.shards())} shards of {store.path}"
                     for store in stores)
    return WriteFailed(f"{error}. Complete and kept: {kept} (an unfinished shard has no completion marker and is "
                       "rewritten whole); free space (or fix the folder) and rerun the same command: it writes "
                       "only the shards each store still lacks")


class _RateColumn(ProgressColumn):
    """Samples per second, measured over the last few updates."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0.0:7.1f} samples/s")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
