"""Smoke run of `python -m bench.train --quick`: it finishes and prints every ratio and sweep figure it promises."""
import re

from typer.testing import CliRunner

from bench import train

RATIO = re.compile(r"^ratio (?P<name>live .+): (?P<value>\d+\.\d+)x(?: \(goal >= \d+x: (?:met|MISSED)\))?$",
                   re.MULTILINE)


def test_train_benchmark_prints_epoch_cache_read_and_sweep_ratios() -> None:
    result = CliRunner().invoke(train.app, ["--quick"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "command: python -m bench.train --quick" in output and "machine: " in output
    ratios = {match["name"]: float(match["value"]) for match in RATIO.finditer(output)}
    for expected in ("live epoch / cache epoch (same 8 pairs", "live epoch / cache epoch (MIMIC-CXR-sized",
                     "live run / cache run (demo)", "live run / cache run (MIMIC-CXR-sized)"):
        assert sum(name.startswith(expected) for name in ratios) == 1, (expected, output)
    assert all(value > 1 for value in ratios.values()), ratios
    assert "ratio store read throughput / raw read of its shard files: " in output
    assert output.count("sweep points per hour") == 4


def test_train_benchmark_refuses_pairs_that_are_not_whole_batches() -> None:
    result = CliRunner().invoke(train.app, ["--quick", "--pairs", "10", "--batch-size", "4"])
    assert result.exit_code == 2
    assert "--pairs" in result.output
