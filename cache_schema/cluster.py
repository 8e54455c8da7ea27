"""Where whole units of work run: this process, a local Dask cluster, or a running Dask scheduler.

The store's shard is the unit of work for extraction and a sweep's run for training; both stages
place their tasks through this one module so `--scheduler` means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    from distributed import LocalCluster

Item = TypeVar("Item")
Result = TypeVar("Result")

SCHEDULER_HELP = ("'none' runs in this process; 'local:N' starts a Dask cluster of N worker processes; "
                  "'tcp://HOST:PORT' uses a running Dask scheduler.")


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
    if value in ("none", ""):
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
    scheduler: Scheduler, task: Callable[[Item], Result], items: Sequence[Item]
) -> Iterator[tuple[Item, Result]]:
    """Runs task(item) for every item as Dask tasks, yielding (item, result) as each one finishes.

    Each task does its whole unit of work itself (writes its whole shard, trains its whole run),
    so no two workers ever write the same object. A task's error is raised here.
    """
    from distributed import Client, as_completed

    cluster = local_cluster(scheduler.local_workers) if scheduler.address is None else None
    client = Client(scheduler.address or cluster)
    try:
        futures = client.map(task, list(items), pure=False)
        item_of = {future.key: item for future, item in zip(futures, items)}
        for future in as_completed(futures):
            yield item_of[future.key], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def local_cluster(workers: int) -> LocalCluster:
    """The cluster `local:N` starts: N single-threaded worker processes on this machine; close it after use."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
