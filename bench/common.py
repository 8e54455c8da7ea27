"""What the benchmarks share: the machine they ran on, interleaved best-of timing, and ratio lines.

This machine is shared and noisy, so every benchmark runs its contenders in interleaved rounds
(A, B, C, A, B, C, ...) and keeps each one's best round: a burst of load from elsewhere then
slows one round of everyone rather than every round of one contender, and the ratios printed
side by side stay meaningful.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Machine:
    """Where a benchmark ran: enough to tell whether two sets of figures are comparable."""

    cores: int
    cpu: str
    system: str
    python: str
    torch: str
    torch_threads: int
    numpy: str
    device: str
    load_average: float

    def line(self) -> str:
        return (f"machine: {self.cores} cores ({self.cpu}), {self.system}, Python {self.python}, torch {self.torch} "
                f"({self.torch_threads} threads), numpy {self.numpy}, device {self.device}, "
                f"load average {self.load_average:.1f} at start")


def describe_machine(device: str = "cpu") -> Machine:
    """The machine this process runs on; `device` is the torch device the benchmark uses."""
    accelerator = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    return Machine(
        cores=os.cpu_count() or 1,
        cpu=_cpu_model(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        numpy=np.__version__,
        device=f"{device} ({accelerator})" if accelerator != "cpu" else "cpu",
        load_average=os.getloadavg()[0],
    )


def best_seconds(contenders: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each contender's fastest round, running them in interleaved rounds.

    A contender is a callable that does its work once and returns the seconds that count (so it
    can leave its own setup, such as creating a fresh output folder, out of the time).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, contender in contenders.items():
            best[name] = min(best[name], contender())
    return best


def timed(work: Callable[[], object]) -> float:
    """Seconds one call of `work` takes."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


class Direction(str, Enum):
    """Which side of its goal a ratio must land on."""

    AT_LEAST = ">="
    AT_MOST = "<="


@dataclass(frozen=True)
class Ratio:
    """A measured ratio, optionally with the goal it is held to."""

    name: str
    value: float
    goal: float | None = None
    direction: Direction = Direction.AT_LEAST
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.direction is Direction.AT_LEAST else self.value <= self.goal

    def line(self) -> str:
        """`ratio NAME: VALUE (goal >= X: met)`: the line a reader (and the smoke test) looks for."""
        text = f"ratio {self.name}: {self.value:.2f}{self.unit}"
        if self.goal is not None:
            text += f" (goal {self.direction.value} {self.goal:g}{self.unit}: {'met' if self.met else 'MISSED'})"
        return text


def _cpu_model() -> str:
    if CPUINFO.is_file():
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
