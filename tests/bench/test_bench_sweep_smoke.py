"""Smoke run of `python -m bench.sweep --quick`: it finishes, finds the stacked results equal, prints every ratio."""
import re

import pytest
import torch
from typer.testing import CliRunner

from bench import sweep

RATIO = re.compile(r"^ratio (?P<name>.+?): (?P<value>\d+\.\d+)x(?: \(goal >= 4x: (?:met|MISSED)\))?$", re.MULTILINE)


@pytest.fixture
def one_torch_thread():
    """Tiny Adaptors on a busy 2-core machine: a second intra-op thread spins against the other processes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_sweep_benchmark_prints_throughput_ratios_and_equal_results(one_torch_thread) -> None:
    result = CliRunner().invoke(sweep.app, ["--quick"])

    assert result.exit_code == 0, result.output
    output = result.output
    assert "command: python -m bench.sweep --quick" in output and "machine: " in output
    ratios = {match["name"]: float(match["value"]) for match in RATIO.finditer(output)}
    assert {name.split(" (")[0] for name in ratios} == {
        "stacked, groups of 2 / one at a time, sweep points per hour",
        "stacked, groups of 2 / one at a time, checkpoints every epoch, sweep points per hour",
        "stacked fast, groups of 2 / one at a time, sweep points per hour",
        "stacked fast, groups of 2 / one at a time, checkpoints every epoch, sweep points per hour",
        "one run / stacked, time per point for one epoch",
        "one run / stacked, time per point-step",
        "one run / stacked fast form, time per point-step",
        "vmap / grouped products, forward + backward",
    }, output
    assert all(value > 0 for value in ratios.values())
    assert output.count("same leaderboard, weights bit for bit") == 2, output
    fast = re.search(r"stacked fast, groups of 2 .*same leaderboard, weights (bit for bit|largest difference (\S+))",
                     output)
    assert fast and (fast[2] is None or float(fast[2]) <= 1e-5), output
    assert output.count("sweep points per hour") >= 3


def test_sweep_benchmark_refuses_a_cache_without_its_backbones() -> None:
    result = CliRunner().invoke(sweep.app, ["--quick", "--cache", "cache"])

    assert result.exit_code == 2
    assert "--vision and --text" in result.output
