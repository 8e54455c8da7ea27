"""Where shard tasks run: in this process, on a local Dask cluster, or on an existing one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from cache_schema import ShardSpan
from extract.job import ExtractionJob

SCHEDULER_HELP = ("'none' runs in this process (DataLoader workers decode); 'local:N' starts a Dask cluster of N "
                  "worker processes; 'tcp://HOST:PORT' uses a running Dask scheduler.")


class SchedulerError(ValueError):
    """The --scheduler option is not one of the accepted forms."""


@dataclass(frozen=True)
class Scheduler:
    """A parsed --scheduler value."""

    local_workers: int = 0
    address: str | None = None

    @property
    def in_process(self) -> bool:
        return not self.local_workers and self.address is None


def parse_scheduler(value: str) -> Scheduler:
    """Reads 'none', 'local:N' or a Dask scheduler address (tcp://, tls://, ...)."""
    if value in ("none", "", "local:0"):
        return Scheduler()
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise SchedulerError(f"--scheduler {value!r}: the worker count after 'local:' must be a positive integer")
        return Scheduler(local_workers=int(count))
    if "://" in value:
        return Scheduler(address=value)
    raise SchedulerError(f"--scheduler {value!r} not understood. {SCHEDULER_HELP}")


def run_on_dask(
    scheduler: Scheduler,
    task: Callable[[ExtractionJob, int], object],
    job: ExtractionJob,
    spans: Sequence[ShardSpan],
    on_shard_done: Callable[[ShardSpan], None],
) -> None:
    """Runs one task per shard on a Dask cluster; each task writes its whole shard itself."""
    from distributed import Client, LocalCluster, as_completed

    if scheduler.address:
        client, cluster = Client(scheduler.address), None
    else:
        cluster = LocalCluster(n_workers=scheduler.local_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = client.map(task, [job] * len(spans), [span.index for span in spans], pure=False)
        span_of = {future.key: span for future, span in zip(futures, spans)}
        for future in as_completed(futures):
            future.result()
            on_shard_done(span_of[future.key])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
