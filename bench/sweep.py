"""Sweep throughput: sweep points trained as stacked groups against one run at a time, results checked equal.

`python -m bench.sweep [--quick] [--cache DIR --dataset NAME --vision V --text T] [--points N] [--groups 4,8,16]
[--rounds R] [--scale-points G] [--steps S] [--device cpu|cuda] [--time-limit SECONDS] [--threads N]
[--parts demo,scale,stacking]` prints, in one run:

1. Demo sweep: one grid of N points (the DEMO recipe; learning rate x weight decay x seed x dropout) swept
   by `run_sweep` into fresh folders, in interleaved rounds: one run at a time with checkpoints every
   epoch (how the sweep wrote them before stacking), one run at a time, and stacked in groups of each G,
   in the exact form and in the fast one (`--stack-mode fast`: one AdamW step over the stack, batched
   norms and loss). Seconds per point, sweep points per hour, their ratios, and a check that every
   contender's leaderboard (wall time aside) and every run's weights equal the one-at-a-time sweep's
   (the fast form's within its tolerance: the largest weight difference is printed). The cache is
   `--cache` (e.g. the demo cache `make extract` builds) or, by default, synthetic stores of the demo's
   size and widths.
2. MIMIC-CXR-sized cache (377,110 images x 768, 227,835 studies x 768, synthetic float16), the paper's
   recipe (batch 1024, P=768, L=2): Adaptor steps of one run against a stacked group of G runs (exact
   and fast form),
   interleaved rounds of `--steps` steps (an epoch of 360 steps is too long for this shared machine);
   an end of epoch (validation, checkpoints) in the same rounds; the cache load (once per run, once per
   group) measured once; one epoch per point extrapolated from them; and the tensor operations
   each step dispatches (on CUDA about one kernel launch each, which bounds a small model's GPU step).
3. The other way to stack: `torch.func.stack_module_state` + `functional_call` + `vmap` against the
   grouped products of `train.stacked_model`, forward and backward of G Adaptors, at the demo's and the
   paper's sizes. (vmap draws dropout masks for all points from one generator, so it cannot reproduce
   a solo run's masks: it is timed only.)

Every derived figure uses each contender's best round (`bench.common`); `--time-limit` stops starting
new rounds once that many seconds have passed (each part runs at least one), so a scripted GPU run
stays bounded. Stacked and solo code are the same on `--device cuda`; CUDA timings synchronise.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import itertools
import os
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import typer
from safetensors.torch import load_file
from torch.func import functional_call, stack_module_state, vmap
from torch.utils._python_dispatch import TorchDispatchMode

from adaptor_vlp.cache_schema import CacheStore, Modality
from adaptor_vlp.train.batches import TRAIN_SPLIT, PairedData, steps_per_epoch
from adaptor_vlp.train.loop import TrainingRun, start_run, train_epoch
from adaptor_vlp.train.loss import contrastive_loss
from adaptor_vlp.train.model import Adaptor, AdaptorConfig
from adaptor_vlp.train.pairs import StorePairing, pair_stores
from adaptor_vlp.train.recipe import DEMO, PAPER, Recipe, RecipeName
from adaptor_vlp.train.stacked import StackedRuns
from adaptor_vlp.train.stacked_model import StackedAdaptors, StackMode
from adaptor_vlp.train.sweep import LEADERBOARD_CSV, SweepRun, expand_grid, run_sweep
from bench.cache_formats import SPLIT_SHARES as MIMIC_SPLIT_SHARES
from bench.common import Ratio, describe_machine
from bench.extract import Device
from bench.train import (
    DEMO_SPLIT_SHARES,
    MIMIC_IMAGES,
    MIMIC_STUDIES,
    SECONDS_PER_HOUR,
    SYNTHETIC_DATASET,
    Timings,
    synthetic_backbone,
    write_synthetic_stores,
)

DEMO_GRID = {"lr": [1e-3, 3e-3], "weight_decay": [0.01, 0.1], "seed": [0, 1], "dropout": [0.1, 0.0]}
"""The demo sweep's grid (16 points); `--points` keeps its first N combinations."""
DEMO_IMAGE_DIM, DEMO_TEXT_DIM = 512, 384
"""The demo's backbone widths (resnet18-random, MiniLM)."""
STACK_GOAL = 4.0
"""Goal: sweep points per hour stacked at least this many times one run at a time's (demo, this CPU)."""
EVERY_EPOCH = "one at a time, checkpoints every epoch"
ONE_AT_A_TIME = "one at a time"
METADATA_OPERATIONS = frozenset({
    "view", "t", "transpose", "select", "slice", "unsqueeze", "squeeze", "as_strided", "expand", "_reshape_alias",
    "reshape", "permute", "detach", "alias", "unbind", "split", "chunk", "unflatten", "diagonal", "split_with_sizes",
    "_unsafe_view", "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "resize_", "_local_scalar_dense", "is_same_size", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"})
"""Operations that only make a view, allocate or read a scalar back: no kernel of their own."""
SCALE_LR = (2e-5, 5e-5, 1e-4, 2e-4)
"""Learning rates of the stacked MIMIC-sized group's points, repeated when it has more."""


class Part(str, Enum):
    """The benchmark's parts, each runnable alone (`--parts`)."""

    DEMO = "demo"
    SCALE = "scale"
    STACKING = "stacking"


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes; `--quick` picks small caches and grids."""

    cache: Path | None
    dataset: str
    vision: str | None
    text: str | None
    points: int
    groups: tuple[int, ...]
    rounds: int
    demo_epochs: int | None
    """Epochs of every demo point; None keeps the DEMO recipe's (with its early stopping)."""
    scale_images: int
    scale_studies: int
    scale_dim: int
    scale_batch_size: int
    scale_points: int
    steps: int
    adaptor_shape: Mapping[str, int]
    """Recipe overrides of the Adaptor's shape for parts 2 and 3's paper size; empty = the paper's Adaptor."""
    device: Device
    time_limit: float
    parts: tuple[Part, ...] = tuple(Part)

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        cache = (f" --cache {self.cache} --dataset {self.dataset} --vision {self.vision} --text {self.text}"
                 if self.cache else "")
        return (f"python -m bench.sweep{' --quick' if quick else ''}{cache} --points {self.points} --groups "
                f"{','.join(map(str, self.groups))} --rounds {self.rounds} --scale-points {self.scale_points} "
                f"--steps {self.steps} --device {self.device.value} --time-limit {self.time_limit:g} "
                f"--threads {torch.get_num_threads()} --parts {','.join(part.value for part in self.parts)}")


FULL = Settings(cache=None, dataset=SYNTHETIC_DATASET, vision=None, text=None, points=16, groups=(4, 8, 16), rounds=2,
                demo_epochs=None, scale_images=MIMIC_IMAGES, scale_studies=MIMIC_STUDIES, scale_dim=768,
                scale_batch_size=PAPER.batch_size, scale_points=4, steps=6, adaptor_shape={}, device=Device.CPU,
                time_limit=1800.0)
QUICK = dataclasses.replace(
    FULL, points=2, groups=(2,), rounds=1, demo_epochs=1, scale_images=6000, scale_studies=3600, scale_dim=64,
    scale_batch_size=64, scale_points=2, steps=2, time_limit=120.0,
    adaptor_shape={"projection_dim": 64, "num_heads": 4, "ffn_dim": 128},
)
"""Part 2 keeps the paper's two layers, so its count of dispatched operations is the paper Adaptor's (widths do not
change it)."""


class Deadline:
    """Interleaved rounds (A, B, C, A, B, C, ...) that stop starting new rounds once `limit` seconds have passed."""

    def __init__(self, limit: float) -> None:
        self.ends = time.perf_counter() + limit

    def rounds(self, contenders: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, Timings]:
        """Every round's seconds of each contender; at least one round, at most `rounds`."""
        recorded: dict[str, list[float]] = {name: [] for name in contenders}
        for index in range(rounds):
            if index and time.perf_counter() > self.ends:
                break
            for name, contender in contenders.items():
                recorded[name].append(contender())
        return {name: Timings(tuple(seconds)) for name, seconds in recorded.items()}


def synchronised(device: torch.device, work: Callable[[], object]) -> float:
    """Seconds `work` takes, waiting for the device to finish it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Equality:
    """How a contender's results compare with the one-at-a-time sweep's."""

    same_leaderboard: bool
    largest_weight_difference: float

    def text(self) -> str:
        board = "same leaderboard" if self.same_leaderboard else "LEADERBOARD DIFFERS"
        weights = ("bit for bit" if self.largest_weight_difference == 0
                   else f"largest difference {self.largest_weight_difference:.2g}")
        return f"{board}, weights {weights}"


@dataclass(frozen=True)
class DemoFigures:
    """Part 1: whole sweeps of the same grid, one run at a time and stacked."""

    points: int
    source: str
    timings: Mapping[str, Timings]
    equality: Mapping[str, Equality]
    epochs_run: int

    def per_point(self, name: str) -> float:
        return self.timings[name].best / self.points

    def lines(self) -> list[str]:
        lines = [f"1. demo sweep: {self.points} points (DEMO recipe; {', '.join(DEMO_GRID)}), {self.source}; "
                 f"{self.epochs_run} epochs run in all (early stopping as the recipe sets it)"]
        for name, timing in self.timings.items():
            lines.append(f"   {name:<40} {timing.text()} = {self.per_point(name):.3f} s/point -> "
                         f"{SECONDS_PER_HOUR / self.per_point(name):,.0f} sweep points per hour"
                         + (f"; {self.equality[name].text()}" if name in self.equality else ""))
        for name in self.timings:
            if name.startswith("stacked"):
                lines.append(Ratio(f"{name} / {ONE_AT_A_TIME}, sweep points per hour (demo, {self.points} points)",
                                   self.per_point(ONE_AT_A_TIME) / self.per_point(name), goal=STACK_GOAL,
                                   unit="x").line())
                lines.append(Ratio(f"{name} / {EVERY_EPOCH}, sweep points per hour (demo)",
                                   self.per_point(EVERY_EPOCH) / self.per_point(name), unit="x").line())
        return lines


def demo_runs(settings: Settings, vision: str, text: str) -> list[SweepRun]:
    """The first `settings.points` combinations of DEMO_GRID on the given backbones.

    `text` may name several text backbones, comma-separated: the grid then crosses them too (fastest-varying, so
    the first points alternate them), and a stack holds Adaptors of several text encoders on one image store.
    """
    texts = text.split(",")
    grid = {**DEMO_GRID, **({"epochs": [settings.demo_epochs]} if settings.demo_epochs else {}),
            **({"text": texts} if len(texts) > 1 else {})}
    runs = expand_grid(grid, RecipeName.DEMO, vision, None if len(texts) > 1 else text)
    if settings.points > len(runs):
        raise typer.BadParameter(f"the demo grid has {len(runs)} points", param_hint="--points")
    return runs[:settings.points]


def measure_demo(settings: Settings, folder: Path, deadline: Deadline) -> DemoFigures:
    """Part 1: the same sweep by every contender, each round into fresh folders; results compared at the end."""
    if settings.cache is None:
        cache, dataset = folder / "cache", SYNTHETIC_DATASET
        counts = sum(DEMO_SPLIT_SHARES.values())
        write_synthetic_stores(cache, counts, counts, DEMO_IMAGE_DIM, DEMO_TEXT_DIM, DEMO_SPLIT_SHARES,
                               cache_layout=True)
        vision, text = synthetic_backbone(Modality.IMAGE, DEMO_IMAGE_DIM), synthetic_backbone(Modality.TEXT,
                                                                                               DEMO_TEXT_DIM)
        source = (f"synthetic stores of the demo's size ({counts} pairs) and widths "
                  f"({DEMO_IMAGE_DIM}/{DEMO_TEXT_DIM}-d)")
    else:
        cache, dataset, vision, text = settings.cache, settings.dataset, settings.vision, settings.text
        source = f"cache {cache} ({dataset}: {vision} + {text})"
    runs = demo_runs(settings, vision, text)
    sweep = functools.partial(run_sweep, runs, cache, dataset, device=settings.device.value)
    run_sweep(runs[:2], cache, dataset, folder / "warm-up", device=settings.device.value, stack_size=2)
    contenders = {EVERY_EPOCH: dict(stack_size=1, checkpoint_seconds=0.0), ONE_AT_A_TIME: dict(stack_size=1),
                  **{f"stacked, groups of {group}": dict(stack_size=group) for group in settings.groups},
                  **{f"stacked fast, groups of {group}": dict(stack_size=group, stack_mode=StackMode.FAST)
                     for group in settings.groups}}
    rounds = itertools.count()
    folders: dict[str, Path] = {}

    def contender(name: str, options: dict) -> Callable[[], float]:
        def run() -> float:
            folders[name] = folder / f"{name.replace(' ', '_').replace(',', '')}-{next(rounds)}"
            return synchronised(torch.device(settings.device.value), lambda: sweep(folders[name], **options))
        return run

    timings = deadline.rounds({name: contender(name, options) for name, options in contenders.items()},
                              settings.rounds)
    reference = folders[ONE_AT_A_TIME]
    equality = {name: compare_sweeps(reference, folders[name], runs) for name in contenders if name != ONE_AT_A_TIME}
    epochs = sum(int(row["epochs_run"]) for row in _leaderboard(reference))
    return DemoFigures(len(runs), source, timings, equality, epochs)


def compare_sweeps(reference: Path, other: Path, runs: Sequence[SweepRun]) -> Equality:
    """Leaderboards (wall time aside) and every run's best and last weights against the reference sweep's."""
    largest = 0.0
    for run in runs:
        for kind in ("best", "last"):
            first = load_file(reference / run.name / f"{kind}.safetensors")
            second = load_file(other / run.name / f"{kind}.safetensors")
            largest = max([largest] + [(first[name].double() - second[name].double()).abs().max().item()
                                       for name in first if name.startswith("model.")])
    return Equality(_leaderboard(reference) == _leaderboard(other), largest)


def _leaderboard(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / LEADERBOARD_CSV) as handle:
        return [{key: value for key, value in row.items() if key != "wall_seconds"} for row in csv.DictReader(handle)]


@dataclass(frozen=True)
class ScaleFigures:
    """Part 2: the paper's recipe on a MIMIC-CXR-sized cache, one run's steps against a stacked group's."""

    images: int
    dim: int
    train_pairs: int
    recipe: Recipe
    points: int
    steps_per_round: int
    solo_step: Timings
    stacked_step: Timings
    fast_step: Timings
    """A step of the stacked group in the fast form (`StackMode.FAST`)."""
    load_seconds: float
    end_of_epoch: Timings
    """Validation and checkpoints (the last one, and the best one when the epoch improves) of one run."""
    operations_per_step: tuple[float, float, float, float]
    """Dispatched tensor operations per step: one run's, the stacked group's, the fast stacked group's, and the fast
    group's when its points share learning rate and weight decay (a study's stack of text encoders)."""

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.train_pairs, self.recipe.batch_size)

    def epoch_seconds(self, stacked: bool) -> float:
        """One epoch per point from opening the stores: load (shared by a group), steps, end of epoch."""
        if stacked:
            return (self.load_seconds / self.points + self.steps_per_epoch * self.stacked_step.best / self.points
                    + self.end_of_epoch.best)
        return self.load_seconds + self.steps_per_epoch * self.solo_step.best + self.end_of_epoch.best

    def lines(self) -> list[str]:
        per_point = self.stacked_step.best / self.points
        fast_per_point = self.fast_step.best / self.points
        return [
            f"2. MIMIC-CXR-sized cache: {self.images:,} images x {self.dim} (synthetic float16), "
            f"{self.train_pairs:,} train pairs; paper recipe, batch {self.recipe.batch_size}, "
            f"P={self.recipe.projection_dim}, L={self.recipe.num_layers}; stacked group of {self.points} points "
            f"(learning rates {sorted(set(SCALE_LR[:self.points]))})",
            f"   measured, {self.steps_per_round} steps a round: one run {self.solo_step.text('s')} per step; "
            f"stacked {self.stacked_step.text('s')} per step of all {self.points} = {per_point:.3f} s per point-step; "
            f"fast form {self.fast_step.text('s')} = {fast_per_point:.3f} s per point-step",
            f"   measured: end of epoch (validation, last checkpoint and best when improved) "
            f"{self.end_of_epoch.text('s')} per point; once: cache load (open, join, read) {self.load_seconds:.1f} s, "
            "once per run or per group",
            f"   tensor operations dispatched per step (a foreach op once; on CUDA about one kernel each): one run "
            f"{self.operations_per_step[0]:.0f}, stacked group {self.operations_per_step[1]:.0f} = "
            f"{self.operations_per_step[1] / self.points:.0f} per point, fast form {self.operations_per_step[2]:.0f} "
            f"= {self.operations_per_step[2] / self.points:.0f} per point (with one learning rate for all points, "
            f"as a study's stack has: {self.operations_per_step[3]:.0f} = "
            f"{self.operations_per_step[3] / self.points:.0f} per point)",
            f"   extrapolated epoch of {self.steps_per_epoch} steps per point, from opening the stores: one run "
            f"{self.epoch_seconds(False) / 60:.1f} min, stacked {self.epoch_seconds(True) / 60:.1f} min",
            Ratio(f"one run / stacked, time per point for one epoch (MIMIC-sized, groups of {self.points}, "
                  "extrapolated)", self.epoch_seconds(False) / self.epoch_seconds(True), unit="x").line(),
            Ratio(f"one run / stacked, time per point-step (MIMIC-sized, groups of {self.points}, measured)",
                  self.solo_step.best / per_point, unit="x").line(),
            Ratio(f"one run / stacked fast form, time per point-step (MIMIC-sized, groups of {self.points}, "
                  "measured)", self.solo_step.best / fast_per_point, unit="x").line(),
        ]


def measure_scale(settings: Settings, folder: Path, deadline: Deadline) -> ScaleFigures:
    """Part 2: the stores, then one run's and a stacked group's steps in interleaved rounds, then the rest once."""
    image_store, text_store = write_synthetic_stores(folder / "stores", settings.scale_images, settings.scale_studies,
                                                     settings.scale_dim, settings.scale_dim, MIMIC_SPLIT_SHARES)

    def open_pairing() -> StorePairing:
        return pair_stores(CacheStore.open(image_store.path), CacheStore.open(text_store.path))

    pairing = open_pairing()
    n_train, batch_size = len(pairing.splits[TRAIN_SPLIT]), settings.scale_batch_size
    if settings.steps * batch_size > n_train:
        raise typer.BadParameter(f"{settings.steps} steps of {batch_size} pairs need more than the cache's {n_train} "
                                 "training pairs", param_hint="--steps")
    subset = PAPER.with_overrides({**settings.adaptor_shape, "batch_size": batch_size,
                                   "data_pct": 100 * settings.steps * batch_size / n_train})
    recipes = [subset.with_overrides({"lr": SCALE_LR[point % len(SCALE_LR)], "seed": point})
               for point in range(settings.scale_points)]
    device = torch.device(settings.device.value)
    loaded: list[PairedData] = []
    load_seconds = synchronised(device, lambda: loaded.append(PairedData(open_pairing(), recipes[0])))
    with torch.random.fork_rng(devices=[]):
        solo = start_run(folder / "solo", loaded[0], pairing.provenance(), device, checkpoint_seconds=0.0)
    if not isinstance(solo, TrainingRun):
        raise RuntimeError(f"{folder / 'solo'} held a finished run; the benchmark needs a fresh folder")
    group = StackedRuns(pairing, recipes, [folder / f"stacked-{point}" for point in range(len(recipes))],
                        settings.device.value)
    group.finish_done()
    fast = StackedRuns(pairing, recipes, [folder / f"fast-{point}" for point in range(len(recipes))],
                       settings.device.value, stack_mode=StackMode.FAST)
    fast.finish_done()
    shared = StackedRuns(pairing, [recipes[0].with_overrides({"seed": point}) for point in range(len(recipes))],
                         [folder / f"shared-{point}" for point in range(len(recipes))], settings.device.value,
                         stack_mode=StackMode.FAST)
    shared.finish_done()
    epochs = itertools.count(1)

    def solo_steps() -> float:
        return synchronised(device, lambda: train_epoch(solo.model, solo.data, next(epochs), solo.optimizer,
                                                         solo.scheduler, device)) / settings.steps

    def stacked_steps() -> float:
        return synchronised(device, group.train_steps) / settings.steps

    def fast_steps() -> float:
        return synchronised(device, fast.train_steps) / settings.steps

    def end_of_epoch() -> float:
        return synchronised(device, lambda: solo.end_epoch(solo.progress.epoch + 1, 0.0, time.perf_counter()))

    solo_steps(), stacked_steps(), fast_steps(), shared.train_steps()
    timings = deadline.rounds({"one run": solo_steps, "stacked": stacked_steps, "fast": fast_steps,
                               "end of epoch": end_of_epoch}, settings.rounds)
    operations = tuple(dispatched_operations(steps) / settings.steps for steps in (solo_steps, stacked_steps,
                                                                                   fast_steps, shared.train_steps))
    return ScaleFigures(settings.scale_images, settings.scale_dim, n_train, subset.with_overrides({"data_pct": 100.0}),
                        settings.scale_points, settings.steps, timings["one run"], timings["stacked"], timings["fast"],
                        load_seconds, timings["end of epoch"], operations)


def dispatched_operations(work: Callable[[], object]) -> int:
    """Tensor operations `work` dispatches that do work (views, allocations and scalar reads aside).

    Counted below autograd, so the backward pass's operations count too, and a multi-tensor
    (foreach) operation counts once: on CUDA it is one kernel over all its tensors. On CUDA each
    counted operation is about one kernel launch, which bounds a small model's step when the GPU
    waits on them.
    """
    counter = _OperationCounter()
    with counter:
        work()
    return counter.count


class _OperationCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it, except METADATA_OPERATIONS."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func.overloadpacket.__name__ not in METADATA_OPERATIONS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class StackingFigures:
    """Part 3: forward and backward of G Adaptors, grouped products against torch.func.vmap."""

    size: str
    points: int
    batch_size: int
    grouped: Timings
    vmapped: Timings

    def lines(self) -> list[str]:
        return [f"   {self.size}, {self.points} points, batch {self.batch_size}: grouped products "
                f"{self.grouped.text('ms', 1e3)}, vmap {self.vmapped.text('ms', 1e3)}",
                Ratio(f"vmap / grouped products, forward + backward ({self.size}, {self.points} points)",
                      self.vmapped.best / self.grouped.best, unit="x").line()]


def measure_stacking(config: AdaptorConfig, size: str, points: int, batch_size: int, settings: Settings,
                     deadline: Deadline) -> StackingFigures:
    """Part 3 at one size: the same G Adaptors and batches stacked both ways, forward + backward, interleaved."""
    device = torch.device(settings.device.value)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(points, batch_size, config.image_dim, generator=generator).to(device)
    text = torch.randn(points, batch_size, config.text_dim, generator=generator).to(device)
    models = [Adaptor(config).to(device).train() for _ in range(points)]
    parameters, buffers = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")
    stack = StackedAdaptors(models)
    generators = [torch.Generator(device).manual_seed(point) for point in range(points)]

    def point_loss(point_parameters: dict, point_buffers: dict, point_image: torch.Tensor,
                   point_text: torch.Tensor) -> torch.Tensor:
        output = functional_call(template, (point_parameters, point_buffers), (point_image, point_text))
        return contrastive_loss(output.image_embeds.float(), output.text_embeds.float(), output.logit_scale).loss

    def vmapped() -> None:
        vmap(point_loss, randomness="different")(parameters, buffers, image, text).sum().backward()
        for value in parameters.values():
            value.grad = None

    def grouped() -> None:
        output = stack.forward(image, text, generators)
        torch.stack([contrastive_loss(*parts).loss for parts in zip(
            output.image_embeds.float().unbind(), output.text_embeds.float().unbind(), output.logit_scale.unbind())
        ]).sum().backward()
        stack.zero_grad()

    for work in (grouped, vmapped):
        work()
    timings = deadline.rounds({"grouped": lambda: synchronised(device, grouped),
                               "vmap": lambda: synchronised(device, vmapped)}, max(3, settings.rounds))
    return StackingFigures(size, points, batch_size, timings["grouped"], timings["vmap"])


def run_benchmark(settings: Settings) -> list[str]:
    """Every part in a temporary folder; returns the report lines, printing each part as it is measured."""
    deadline = Deadline(settings.time_limit)
    lines: list[str] = []

    def report(part_lines: list[str]) -> None:
        lines.extend(part_lines)
        for line in part_lines:
            typer.echo(line)

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as name:
        folder = Path(name)
        if Part.DEMO in settings.parts:
            report(measure_demo(settings, folder / "demo", deadline).lines())
        if Part.SCALE in settings.parts:
            report(measure_scale(settings, folder / "scale", deadline).lines())
    if Part.STACKING in settings.parts:
        demo = DEMO.adaptor_config(DEMO_IMAGE_DIM, DEMO_TEXT_DIM)
        paper = PAPER.with_overrides(dict(settings.adaptor_shape)).adaptor_config(settings.scale_dim,
                                                                                 settings.scale_dim)
        report(["3. stacking G Adaptors: grouped products (train.stacked_model) against torch.func vmap of "
                "functional_call"])
        report(measure_stacking(demo, "demo size", max(settings.groups), DEMO.batch_size, settings, deadline).lines())
        report(measure_stacking(paper, "paper size" if not settings.adaptor_shape else "reduced paper size",
                                settings.scale_points, settings.scale_batch_size, settings, deadline).lines())
    return lines


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Small caches and grids: a smoke run of seconds."),
    cache: Path | None = typer.Option(None, "--cache", help="Cache folder for part 1 (default: synthetic "
                                      "demo-sized stores); needs --dataset, --vision and --text."),
    dataset: str = typer.Option("mimic-cxr", "--dataset", help="Dataset of --cache."),
    vision: str | None = typer.Option(None, "--vision", help="Image backbone of --cache."),
    text: str | None = typer.Option(None, "--text", help="Text backbone of --cache; several, comma-separated, cross "
                                    "the demo grid with them (stacks then span text encoders)."),
    points: int | None = typer.Option(None, "--points", min=1, help="Demo sweep points (default 16)."),
    groups: str | None = typer.Option(None, "--groups", help="Stacked group sizes to time, comma-separated "
                                      "(default 4,8,16)."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds (default 2)."),
    scale_points: int | None = typer.Option(None, "--scale-points", min=1, help="Points of the MIMIC-sized stacked "
                                            "group (default 4)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="MIMIC-sized steps a round (default 6)."),
    device: Device = typer.Option(Device.CPU, "--device", help="Where the Adaptors train."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=0.0, help="Start no new round after this many "
                                            "seconds (default 1800)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch intra-op threads (default torch's: one "
                                       "per core). On a shared machine 1 keeps tiny Adaptors from spinning."),
    parts: str | None = typer.Option(None, "--parts", help="Comma-separated parts to run: demo, scale, stacking "
                                     "(default all)."),
) -> None:
    """Sweep points trained as stacked groups against one run at a time, with their results checked equal."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    if cache is not None and not (vision and text):
        raise typer.BadParameter("--cache needs --vision and --text", param_hint="--cache")
    try:
        group_sizes = None if groups is None else tuple(int(size) for size in groups.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{groups!r} is not a comma-separated list of group sizes", param_hint="--groups"
        ) from None
    if group_sizes is not None and min(group_sizes) < 2:
        raise typer.BadParameter("a stacked group has at least 2 points", param_hint="--groups")
    try:
        chosen_parts = None if parts is None else tuple(Part(part.strip()) for part in parts.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{parts!r}: parts are {[part.value for part in Part]}", param_hint="--parts"
        ) from None
    if threads is not None:
        torch.set_num_threads(threads)
    chosen = {"cache": cache, "vision": vision, "text": text, "points": points, "groups": group_sizes,
              "rounds": rounds, "scale_points": scale_points, "steps": steps, "time_limit": time_limit,
              "parts": chosen_parts}
    settings = dataclasses.replace(QUICK if quick else FULL, device=device, dataset=dataset,
                                   **{name: value for name, value in chosen.items() if value is not None})
    typer.echo("bench.sweep: sweep points trained as stacked groups against one run at a time")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine(settings.device.value).line())
    run_benchmark(settings)
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
