"""--scheduler values, and tasks placed on a local Dask cluster."""
import pytest

from adaptor_vlp.cache_schema.cluster import Scheduler, SchedulerError, parse_scheduler, run_on_dask


def test_scheduler_values_are_parsed_or_refused() -> None:
    assert parse_scheduler("none") == Scheduler() and parse_scheduler("none").in_process
    assert parse_scheduler("local:3") == Scheduler(local_workers=3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == Scheduler(address="tcp://10.0.0.1:8786")
    with pytest.raises(SchedulerError, match="positive integer"):
        parse_scheduler("local:0")
    with pytest.raises(SchedulerError, match="not understood"):
        parse_scheduler("gpu")


def _square(value: int) -> int:
    return value * value


def test_run_on_dask_yields_every_item_with_its_result() -> None:
    results = dict(run_on_dask(Scheduler(local_workers=1), _square, [2, 3, 4]))
    assert results == {2: 4, 3: 9, 4: 16}
