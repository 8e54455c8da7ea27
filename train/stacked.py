"""Many sweep points trained in one pass: each step runs every point's batch through one stacked model.

Points that share the image store, the Adaptor's shape, the batch size and the data subset (they
may differ in text store, learning rate, weight decay, warm-up, epochs, patience, selection,
gradient clip, loss weight, dropout or seed) train as one `StackedAdaptors`: the image store is
loaded once (each text store once), each point reads its own pairs (an image joins its study's
text in the point's text store), every step computes all points' forward and backward passes as
grouped matrix products, and each point then clips its own gradients and steps its own AdamW and
schedule (the exact form; the fast one, `StackMode.FAST`, batches the norms, loss, clipping and
AdamW over the stack, and its points only come near their solo runs). Each point is a
`TrainingRun` (`train.loop`): its own run folder, metrics, early stopping (a point that stops
leaves the group while the others go on), checkpoints and resume, exactly as `train_adaptor`
trains it alone. A point's batches are its own seed's (`PairedData.with_recipe`), its dropout
masks its own generator's, which stands where the solo run's global generator would
(`_Randomness`). On the CPU each point's weights equal its solo run's bit for bit (tests hold
them within 1e-5); on CUDA both run under the same bf16 autocast, not bit for bit alike.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from adaptor_vlp.cache_schema.lock import FolderLock
from adaptor_vlp.cache_schema.writes import WriteFailed
from adaptor_vlp.train.batches import TRAIN_SPLIT, PairBatch, PairedData
from adaptor_vlp.train.encoding import autocast, resolve_device
from adaptor_vlp.train.history import LearningCurvePlotter
from adaptor_vlp.train.loop import (
    DEFAULT_CHECKPOINT_SECONDS,
    TrainingDiverged,
    TrainingRun,
    TrainResult,
    check_run_folder,
    start_run,
)
from adaptor_vlp.train.loss import contrastive_loss, stacked_contrastive_loss
from adaptor_vlp.train.model import AdaptorInputs
from adaptor_vlp.train.pairs import StorePairing
from adaptor_vlp.train.recipe import Recipe
from adaptor_vlp.train.stacked_model import StackedAdaptors, StackedOutput, StackError, StackMode
from adaptor_vlp.train.stacked_optimizer import StackedAdamW

SCHEDULER_ORDER_WARNING = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"
"""What torch warns when a scheduler steps an optimiser whose own step() never ran (the fast form's stacked step)."""
STACK_SETTINGS = ("batch_size", "data_pct", "subset_seed", "use_views", "inputs", "projection_dim", "num_layers",
                  "num_heads", "ffn_dim")
"""Recipe settings every point of a stack shares: they fix the data, the batches' size and the tensors' shapes."""


def stackable(recipe: Recipe) -> bool:
    """Whether runs of this recipe can train stacked (pooled inputs; token inputs train one run at a time)."""
    return recipe.inputs is AdaptorInputs.POOLED


def stack_key(recipe: Recipe) -> tuple:
    """Recipes with equal keys (and the same image store) can train as one stack."""
    return tuple(getattr(recipe, name) for name in STACK_SETTINGS)


def train_stacked(
    pairings: StorePairing | Sequence[StorePairing],
    recipes: Sequence[Recipe],
    run_dirs: Sequence[Path],
    device: str = "auto",
    resume: bool = False,
    on_epoch: Callable[[Path, Mapping[str, float]], None] | None = None,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    stack_mode: StackMode = StackMode.EXACT,
) -> list[TrainResult]:
    """Trains `recipes[i]` into `run_dirs[i]` for every i as one stacked model; returns the results in that order.

    `pairings` is one pairing for every run, or run i's own (one image store, any text stores).
    Each run behaves as `train_adaptor(pairings[i], recipes[i], run_dirs[i], device, resume, ...)`
    would: the same folder checks, resume rules, checkpoint schedule and results. Runs whose
    pairings hold different numbers of training pairs (a text store without some studies' texts)
    take different numbers of steps per epoch, so they train as consecutive stacks, one per
    count. `stack_mode` picks the exact form (each point bit for bit its solo run) or the fast
    one (near it, not equal; `StackMode`); a mode other than exact is recorded in each run's checkpoints,
    and resuming under another mode is refused (RunFolderError naming stack_mode). `on_epoch`
    sees (run folder, metrics row) after each run's epoch. Raises StackError when the recipes do
    not share the `STACK_SETTINGS`, use token inputs, or the pairings do not share one image
    store. Like `train_adaptor` it holds every run folder's lock while it trains, and a failed
    write (a full disk) raises WriteFailed saying that each run keeps its checkpointed epochs and
    that --resume continues them.
    """
    with contextlib.ExitStack() as locks:
        for run_dir in run_dirs:
            locks.enter_context(FolderLock.acquire(Path(run_dir), "training"))
        pairings = _one_per_run(pairings, recipes, run_dirs)
        _check_stackable(recipes, run_dirs)
        for run_dir in run_dirs:
            check_run_folder(Path(run_dir), resume)
        results: dict[int, TrainResult] = {}
        try:
            for members in _by_training_pairs(pairings):
                runs = StackedRuns([pairings[i] for i in members], [recipes[i] for i in members],
                                   [run_dirs[i] for i in members], device, resume, checkpoint_seconds, stack_mode)
                while runs.finish_done():
                    started = time.perf_counter()
                    losses = runs.train_steps()
                    for run_dir, row in runs.end_epochs(losses, started):
                        if on_epoch is not None:
                            on_epoch(run_dir, row)
                results.update(zip(members, runs.results()))
            return [results[index] for index in range(len(recipes))]
        except WriteFailed as error:
            raise WriteFailed(f"{error}. Each run of this stack keeps the epochs of its last checkpoint; free space "
                              "and rerun the same command with --resume to continue them") from error


class StackedRuns:
    """The runs of one stack, started (fresh or from their checkpoints) and trained together an epoch at a time.

    `train_stacked` drives it: `finish_done` completes the runs with no epoch left (they leave
    the stack) and says whether any still train, `train_steps` trains every remaining run's next
    epoch, `end_epochs` validates and records them. A benchmark may time `train_steps` alone.
    """

    def __init__(self, pairings: StorePairing | Sequence[StorePairing], recipes: Sequence[Recipe],
                 run_dirs: Sequence[Path], device: str = "auto", resume: bool = False,
                 checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
                 stack_mode: StackMode = StackMode.EXACT) -> None:
        pairings = _one_per_run(pairings, recipes, run_dirs)
        _check_stackable(recipes, run_dirs)
        self.device = resolve_device(device)
        run_dirs = [Path(run_dir) for run_dir in run_dirs]
        for run_dir in run_dirs:
            check_run_folder(run_dir, resume)
        if len(_by_training_pairs(pairings)) > 1:
            raise StackError(f"{run_dirs[0]} and the other runs' text stores pair different numbers of training "
                             "images, so their epochs differ in steps; train_stacked trains them as separate stacks")
        data = _shared_data(pairings, recipes)
        self.mode = stack_mode
        self._results: dict[int, TrainResult] = {}
        self._points: list[_Point] = []
        for index, (pairing, point_data, run_dir) in enumerate(zip(pairings, data, run_dirs)):
            with _forked_generators(self.device):
                run = start_run(run_dir, point_data, pairing.provenance(), self.device, checkpoint_seconds, stack_mode)
                if isinstance(run, TrainResult):
                    self._results[index] = run
                else:
                    self._points.append(_Point(index, run, _Randomness.of_process(self.device)))
        self._count = len(recipes)
        self._restack()
        self._plotter = LearningCurvePlotter()

    def finish_done(self) -> bool:
        """Completes every run with no epoch left (all trained, or stopped early) and restacks the rest.

        Returns whether any run still trains.
        """
        done = []
        for point in self._points:
            epoch = point.run.next_epoch()
            if epoch is None:
                done.append(point)
            else:
                point.epoch = epoch
        for point in done:
            with point.randomness.installed():
                self._results[point.index] = point.run.finish(self._plotter)
        if done:
            self._points = [point for point in self._points if point not in done]
            self._restack()
        return bool(self._points)

    def train_steps(self) -> list[float]:
        """Trains every training run's current epoch on its own batches; returns each one's mean training loss."""
        losses: list[list[float]] = [[] for _ in self._points]
        for batches in zip(*(point.run.data.epoch_batches(point.epoch) for point in self._points)):
            for point_losses, value in zip(losses, self._step(batches)):
                point_losses.append(value)
        return [float(np.mean(point_losses)) for point_losses in losses]

    def end_epochs(self, losses: Sequence[float], started: float) -> Iterator[tuple[Path, dict[str, float]]]:
        """Validates and records each training run's epoch (trained since perf_counter `started`); yields its row."""
        for point, loss in zip(self._points, losses):
            with point.randomness.installed():
                yield point.run.run_dir, point.run.end_epoch(point.epoch, loss, started)

    def results(self) -> list[TrainResult]:
        """Every run's result, in the order of the recipes; only once all have finished."""
        return [self._results[index] for index in range(self._count)]

    def _restack(self) -> None:
        """The stack (and in FAST mode its optimiser step) of the runs still training."""
        self._stack = StackedAdaptors([point.run.model for point in self._points], self.mode) \
            if self._points else None
        self._optimizer = StackedAdamW(self._stack, [point.run.optimizer for point in self._points]) \
            if self._points and self.mode is StackMode.FAST else None

    def _step(self, batches: Sequence[PairBatch]) -> list[float]:
        """One training step of every training run on its batch; returns each run's loss."""
        points, stack = self._points, self._stack
        image = torch.stack([batch.image for batch in batches]).to(self.device)
        texts = [batch.text.to(self.device) for batch in batches]
        text = torch.stack(texts) if len({part.shape for part in texts}) == 1 else texts
        with autocast(self.device):
            output = stack.forward(image, text, [point.randomness.dropout for point in points])
            losses = self._losses(output)
        stack.zero_grad()
        losses.sum().backward()
        stack.clip_gradients([point.run.recipe.grad_clip for point in points])
        if self._optimizer is None:
            stack.share_gradients()
            for point in points:
                point.run.optimizer.step()
                point.run.scheduler.step()
        else:
            self._optimizer.step()
            with warnings.catch_warnings():  # the stacked step stands in for each point's optimizer.step()
                warnings.filterwarnings("ignore", message=SCHEDULER_ORDER_WARNING)
                for point in points:
                    point.run.scheduler.step()
        values = losses.tolist()
        for point, value in zip(points, values):
            if not math.isfinite(value):
                raise TrainingDiverged(f"{point.run.run_dir}: training diverged in epoch {point.epoch} "
                                       f"(loss {value}); lower --lr")
        return values


    def _losses(self, output: StackedOutput) -> Tensor:
        """Each point's contrastive loss (G,): its own call (EXACT), or one batched call (FAST)."""
        weights = [point.run.recipe.image_weight for point in self._points]
        image_embeds, text_embeds = output.image_embeds.float(), output.text_embeds.float()
        if self.mode is StackMode.FAST:
            return stacked_contrastive_loss(image_embeds, text_embeds, output.logit_scale,
                                            torch.tensor(weights, device=image_embeds.device))
        return torch.stack([contrastive_loss(image, text, scale, weight).loss
                            for image, text, scale, weight in zip(image_embeds.unbind(), text_embeds.unbind(),
                                                                   output.logit_scale.unbind(), weights)])


def _one_per_run(pairings: StorePairing | Sequence[StorePairing], recipes: Sequence[Recipe],
                 run_dirs: Sequence[Path]) -> list[StorePairing]:
    """Each run's pairing, checked to share one image store."""
    if not recipes or len(recipes) != len(run_dirs):
        raise ValueError(f"train_stacked needs one run folder per recipe, got {len(recipes)} recipes and "
                         f"{len(run_dirs)} folders")
    pairings = [pairings] * len(recipes) if isinstance(pairings, StorePairing) else list(pairings)
    if len(pairings) != len(recipes):
        raise ValueError(f"train_stacked needs one pairing, or one per recipe, got {len(pairings)} for "
                         f"{len(recipes)} recipes")
    for pairing, run_dir in zip(pairings, run_dirs):
        if pairing.image_store.path != pairings[0].image_store.path:
            raise StackError(f"{run_dir}: trains on image store {pairing.image_store.path}, not "
                             f"{pairings[0].image_store.path} of {run_dirs[0]}; a stack shares one image store")
    return pairings


def _by_training_pairs(pairings: Sequence[StorePairing]) -> list[list[int]]:
    """Positions of the pairings, grouped by their number of training pairs (which sets the steps of an epoch)."""
    groups: dict[int, list[int]] = {}
    for index, pairing in enumerate(pairings):
        groups.setdefault(len(pairing.splits.get(TRAIN_SPLIT, ())), []).append(index)
    return list(groups.values())


def _shared_data(pairings: Sequence[StorePairing], recipes: Sequence[Recipe]) -> list[PairedData]:
    """Each run's data, with the image store loaded once and each text store once."""
    by_text_store: dict[Path, PairedData] = {}
    data = []
    for pairing, recipe in zip(pairings, recipes):
        shared = by_text_store.get(pairing.text_store.path)
        if shared is None:
            image = next(iter(by_text_store.values())).image if by_text_store else None
            shared = by_text_store[pairing.text_store.path] = PairedData(pairing, recipe, image)
        data.append(shared.with_recipe(recipe))
    return data


def _check_stackable(recipes: Sequence[Recipe], run_dirs: Sequence[Path]) -> None:
    for recipe, run_dir in zip(recipes, run_dirs):
        if not stackable(recipe):
            raise StackError(f"{run_dir}: inputs={recipe.inputs.value} runs train one at a time, not stacked")
        for name in STACK_SETTINGS:
            if getattr(recipe, name) != getattr(recipes[0], name):
                raise StackError(f"{run_dir}: {name}={getattr(recipe, name)!r} differs from "
                                 f"{getattr(recipes[0], name)!r} of {run_dirs[0]}; a stack shares {STACK_SETTINGS}")


@dataclass
class _Randomness:
    """A point's torch generators, standing where a solo run's global ones would.

    On the CPU a solo run's dropout draws from the global CPU generator right after the model's
    initialisation (or the checkpoint's restored state): `dropout` continues that stream. On
    CUDA, dropout draws from the device's generator and the CPU one rests after initialisation.
    Checkpoints record the global generators, so `installed` puts the point's there while its
    run writes them.
    """

    device: torch.device
    cpu_state: torch.Tensor
    dropout: torch.Generator

    @classmethod
    def of_process(cls, device: torch.device) -> _Randomness:
        """The process's generators as they stand now (after `start_run` seeded or restored them)."""
        cpu_state = torch.get_rng_state()
        dropout = torch.Generator(device)
        dropout.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else cpu_state)
        return cls(device, cpu_state, dropout)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The point's generators as the process's, the process's own restored afterwards."""
        with _forked_generators(self.device):
            if self.device.type == "cuda":
                torch.set_rng_state(self.cpu_state)
                torch.cuda.set_rng_state(self.dropout.get_state(), self.device)
            else:
                torch.set_rng_state(self.dropout.get_state())
            yield


def _forked_generators(device: torch.device) -> contextlib.AbstractContextManager:
    """The process's CPU generator (and the device's, on CUDA) restored on leaving."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[torch.cuda.current_device() if device.index is None else device.index])


@dataclass
class _Point:
    """One run of the group: its position in the caller's list, its TrainingRun, its generators, its epoch."""

    index: int
    run: TrainingRun
    randomness: _Randomness
    epoch: int = 0
