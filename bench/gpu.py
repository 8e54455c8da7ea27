"""The prepared GPU check (`make bench-gpu`): the extraction benchmarks and the stacked sweep on one GPU, bounded.

`python -m bench.gpu [--device cuda|cpu] [--quick] [--budget SECONDS]` runs, one after the other,
each in its own process with its own share of the time budget:

- `bench.extract` with DINOv2-S and with DINOv2-B (bf16 autocast and channels-last on CUDA);
- `bench.multi_extract` with tiny backbones (decode-bound) and with the paper's three;
- `bench.device_decode`: full-resolution JPEG decoding with nvJPEG (`--decoder gpu`), batched,
  against Pillow on one core, and the largest per-pixel difference between the two;
- `bench.sweep`: stacked groups of 16 sweep points (exact and fast form) against one run at a time, and a
  MIMIC-sized stacked group of 16 points at the paper's batch size.

A piece that runs past its share is stopped (with its decoder processes) and reported as such;
the others still run. At the end every ratio line of every piece is printed again, each with the
device's name (`torch.cuda.get_device_name`), and the exit code is 1 if a piece failed or was
stopped. Everything runs offline with seeded random weights, so the check needs nothing but one
GPU and this repository's virtual environment. `--device cpu --quick` runs the same pieces at
their `--quick` sizes on the CPU (the smoke test in tests/bench/).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from enum import Enum

import torch
import typer

from bench.extract import Device

DEFAULT_BUDGET_SECONDS = 450
"""All pieces together; with start-up and the summary the check ends within 8 minutes."""


class Outcome(str, Enum):
    """How a piece ended."""

    OK = "ok"
    FAILED = "failed"
    STOPPED = "stopped at its time limit"


@dataclass(frozen=True)
class Piece:
    """One benchmark of the check: its module, its arguments on the GPU and at --quick sizes, its share."""

    name: str
    module: str
    arguments: tuple[str, ...]
    quick_arguments: tuple[str, ...]
    share: float
    """Fraction of the budget it may use."""

    def command(self, device: Device, quick: bool) -> tuple[str, ...]:
        """Its command line on `device`; `python` at its head is this interpreter."""
        return ("python", "-m", self.module, *(self.quick_arguments if quick else self.arguments),
                "--device", device.value)


QUICK_EXTRACT = ("--quick", "--images", "64", "--batch-size", "4", "--rounds", "2")
"""bench.extract at a small size that still shows a steady state: four shards of four batches, two rounds."""
SWEEP_SECONDS = 60
"""bench.sweep starts no new round after this; its share of the budget leaves room for the round under way."""
PIECES = (
    Piece("extract dinov2-s", "bench.extract", ("--backbone", "dinov2-s", "--images", "1024", "--batch-size",
                                                "128", "--rounds", "1"), QUICK_EXTRACT, share=0.16),
    Piece("extract dinov2-b", "bench.extract", ("--backbone", "dinov2-b", "--images", "1024", "--batch-size",
                                                "128", "--rounds", "1"), (*QUICK_EXTRACT, "--tokens"), share=0.16),
    Piece("one pass, tiny backbones", "bench.multi_extract", ("--images", "2048", "--rounds", "1"),
          ("--quick",), share=0.13),
    Piece("one pass, paper backbones", "bench.multi_extract",
          ("--backbones", "dinov2-s,dinov2-b,resnet-ae", "--images", "1024", "--batch-size", "128", "--rounds", "1"),
          ("--quick", "--backbones", "tiny-vit,tiny-resnet"), share=0.30),
    Piece("JPEG decode on the device", "bench.device_decode", ("--images", "32", "--batch-size", "32", "--rounds",
                                                               "2"), ("--quick",), share=0.05),
    Piece("stacked sweep", "bench.sweep", ("--groups", "16", "--scale-points", "16", "--steps", "20", "--rounds",
                                           "2", "--time-limit", str(SWEEP_SECONDS)), ("--quick",), share=0.2),
)


@dataclass
class PieceResult:
    """A finished piece: how it ended, how long it ran and the ratio lines it printed."""

    piece: Piece
    outcome: Outcome
    seconds: float
    ratios: list[str]
    exit_code: int | None


def run_piece(piece: Piece, command: tuple[str, ...], limit: float) -> PieceResult:
    """Runs `command` in its own process group, echoing its output, and stops the group at `limit` seconds.

    `python` at the head of the command is this interpreter (the repository's virtual environment).
    """
    typer.echo(f"== {piece.name}: {shlex.join(command)} (at most {limit:.0f} s)")
    head, *rest = command
    started = time.monotonic()
    process = subprocess.Popen([sys.executable if head == "python" else head, *rest], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines: list[str] = []
    echo = threading.Thread(target=_echo_lines, args=(process, lines), daemon=True)
    echo.start()
    try:
        process.wait(timeout=max(limit, 1.0))
        outcome = Outcome.OK if process.returncode == 0 else Outcome.FAILED
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        outcome = Outcome.STOPPED
    echo.join(timeout=5)
    ratios = [line for line in lines if line.startswith("ratio ")]
    return PieceResult(piece, outcome, time.monotonic() - started, ratios, process.returncode)


def _echo_lines(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        typer.echo(line)


def device_name(device: Device) -> str:
    """The GPU's name as torch reports it, or the CPU's for a CPU run."""
    if device is Device.CUDA:
        return torch.cuda.get_device_name(0)
    from bench.common import describe_machine

    return describe_machine("cpu").cpu


app = typer.Typer(add_completion=False)


@app.command()
def main(
    device: Device = typer.Option(Device.CUDA, "--device", help="cuda (the GPU check) or cpu (a smoke run)."),
    quick: bool = typer.Option(False, "--quick", help="Every piece at its --quick sizes."),
    budget: float = typer.Option(DEFAULT_BUDGET_SECONDS, "--budget", min=10, help="Seconds for all pieces together; "
                                 "each piece gets its share and is stopped past it."),
) -> None:
    """Run the extraction benchmarks and the stacked sweep on one device, bounded, and summarise every ratio."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    name = device_name(device)
    typer.echo(f"bench.gpu on {device.value}: {name}; budget {budget:.0f} s")
    deadline = time.monotonic() + budget
    results = []
    for piece in PIECES:
        results.append(run_piece(piece, piece.command(device, quick),
                                 min(piece.share * budget, deadline - time.monotonic())))
    typer.echo(f"== summary on {device.value}: {name}")
    for result in results:
        code = (
            "" if result.exit_code in (0, None) or result.outcome is Outcome.STOPPED else f" (exit {result.exit_code})"
        )
        typer.echo(f"{result.piece.name}: {result.outcome.value}{code}, {result.seconds:.0f} s")
        for ratio in result.ratios:
            typer.echo(f"[{name}] {result.piece.name}: {ratio}")
    if any(result.outcome is not Outcome.OK for result in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
