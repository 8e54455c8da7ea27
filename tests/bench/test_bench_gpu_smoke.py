"""The prepared GPU check's driver, run on the CPU at --quick sizes: every piece runs, is bounded and summarised.

Its pieces include `bench.multi_extract --quick`, whose printed figures are checked here too.
"""
import sys

import pytest
from typer.testing import CliRunner

from bench import gpu
from bench.extract import Device


@pytest.mark.slow
def test_the_gpu_check_runs_every_piece_and_prints_each_ratio_with_the_device_name() -> None:
    result = CliRunner().invoke(gpu.app, ["--device", "cpu", "--quick", "--budget", "600"])
    assert result.exit_code == 0, result.output
    summary = result.output.split("== summary on cpu: ", 1)[1]
    name = gpu.device_name(Device.CPU)
    assert summary.startswith(name)
    for piece in gpu.PIECES:
        assert f"{piece.name}: ok" in summary, piece.name
    assert f"[{name}] extract dinov2-s: ratio pipeline/forward: " in summary
    assert f"[{name}] stacked sweep: ratio one run / stacked, time per point-step (MIMIC-sized" in summary
    one_pass = [
        line.split(": ratio ", 1)[1] for line in summary.splitlines() if "one pass, tiny backbones: ratio" in line
    ]
    assert [ratio.split(":")[0] for ratio in one_pass] == [
        "one pass/3 single passes", "one pass/its ceiling", "reader of one pass/readers of the single passes"]
    assert f"[{name}] one pass, paper backbones: ratio one pass/2 single passes: " in summary
    assert f"[{name}] JPEG decode on the device: ratio device decode/one CPU core: " in summary
    pieces_output = result.output.split("== summary", 1)[0]
    assert "one pass (decode at 168 px (shorter side))" in pieces_output  # the largest first resize of the three
    assert "single tiny-vit (decode at 64 px (shorter side))" in pieces_output
    assert pieces_output.count("| bound: ") == 4 + 3


def test_a_piece_past_its_limit_is_stopped_with_its_processes() -> None:
    sleeper = (sys.executable, "-c", "import time; time.sleep(120)")
    result = gpu.run_piece(gpu.PIECES[-1], sleeper, limit=2)
    assert result.outcome is gpu.Outcome.STOPPED and result.seconds < 20
