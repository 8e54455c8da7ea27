"""Sweeps: every combination of a grid of training settings, each a run folder, ranked on a leaderboard.

A grid file (TOML or YAML) maps setting names to lists of values: any recipe setting (`lr`,
`batch_size`, `data_pct`, ...), `recipe` (the named starting point), and the backbones, either as
`pair = [["vision", "text"], ...]` or as separate `vision` and `text` lists (crossed). A single
value stands for a one-element list. Each combination trains into `<out>/<name>`, where the name
spells the combination's values of every grid key, so adding a value to the grid later keeps
the names (and the finished runs) of the existing combinations. A run folder with a completion
marker is skipped; one with only a last checkpoint is resumed.

Runs on the same image store whose recipes differ only in settings a stacked model lets each
point have its own (text backbone, learning rate, weight decay, warm-up, epochs, patience,
selection, gradient clip, loss weight, dropout, seed) train together as one stacked model
(`train.stacked`), with the same weights, folders and results as one at a time.
"""
from __future__ import annotations

import csv
import functools
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import tomllib
import yaml

from adaptor_vlp.cache_schema.cluster import parse_scheduler, run_on_dask
from adaptor_vlp.train.encoding import resolve_device
from adaptor_vlp.train.loop import DEFAULT_CHECKPOINT_SECONDS, TrainResult, read_completed, train_adaptor
from adaptor_vlp.train.pairs import open_pair_stores, pair_stores
from adaptor_vlp.train.recipe import RECIPES, Recipe, RecipeError, RecipeName, Selection
from adaptor_vlp.train.stacked import stack_key, stackable, train_stacked
from adaptor_vlp.train.stacked_model import StackMode

PAIR_KEY = "pair"
VISION_KEY = "vision"
TEXT_KEY = "text"
RECIPE_KEY = "recipe"
NON_RECIPE_KEYS = (PAIR_KEY, VISION_KEY, TEXT_KEY, RECIPE_KEY)
BACKBONE_KEYS = (PAIR_KEY, VISION_KEY, TEXT_KEY)
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MARKDOWN = "leaderboard.md"
LEADERBOARD_METRICS = ("val_loss", "val_recall@1", "val_recall@5", "val_recall@10")
CUDA_STACK_SIZE = 8
"""Runs trained as one stacked model at most by default on CUDA, where a step of the paper's Adaptor waits on kernel
launches and a stacked group shares them: a step of one run dispatches about 340 operations, a stacked group of 4
about 170 per run, of 16 about 110 (BENCHMARKS.md, "Stacked sweeps")."""


class GridError(ValueError):
    """A grid file cannot be read or names a setting that does not exist or does not fit."""


@dataclass(frozen=True)
class SweepRun:
    """One combination of the grid: its folder name, backbones, recipe, and the grid values that made it."""

    name: str
    vision: str
    text: str
    recipe: Recipe
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class SweepOutcome:
    """A combination's result, and whether this sweep trained it or found it finished."""

    run: SweepRun
    result: TrainResult
    skipped: bool


def read_grid(path: Path) -> dict[str, list[Any]]:
    """The grid in a TOML (.toml) or YAML (.yaml, .yml) file, every value as a non-empty list."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"{path}: no such grid file")
    try:
        if path.suffix == ".toml":
            grid = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            grid = yaml.safe_load(path.read_text())
        else:
            raise GridError(f"{path}: a grid file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise GridError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(grid, dict) or not grid:
        raise GridError(f"{path}: must map setting names to lists of values")
    values = {str(key): value if isinstance(value, list) else [value] for key, value in grid.items()}
    empty = [key for key, options in values.items() if not options]
    if empty:
        raise GridError(f"{path}: key '{empty[0]}' has an empty list of values")
    return values


def expand_grid(
    grid: Mapping[str, Sequence[Any]],
    base: RecipeName = RecipeName.PAPER,
    vision: str | None = None,
    text: str | None = None,
    source: str = "grid",
) -> list[SweepRun]:
    """Every combination of the grid as a run, checked before any of them trains.

    `base`, `vision` and `text` apply where the grid has no `recipe`, or no backbones. Raises
    GridError naming `source` and the offending key.
    """
    if PAIR_KEY in grid and (VISION_KEY in grid or TEXT_KEY in grid):
        raise GridError(f"{source}: give backbones as '{PAIR_KEY}' or as '{VISION_KEY}' and '{TEXT_KEY}', not both")
    keys = list(grid)
    runs = []
    for combination in itertools.product(*(grid[key] for key in keys)):
        settings = dict(zip(keys, combination))
        vision_name, text_name = _backbones(settings, vision, text, source)
        recipe = _recipe(settings, base, source)
        name = _run_name(vision_name, text_name, settings)
        runs.append(SweepRun(name, vision_name, text_name, recipe, settings))
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise GridError(f"{source}: combinations share run names {repeated[:3]}; remove repeated values")
    return runs


def run_sweep(
    runs: Sequence[SweepRun],
    cache_dir: Path,
    dataset: str,
    out_dir: Path,
    device: str = "auto",
    scheduler: str = "none",
    rank_by: Selection = Selection.RECALL,
    on_outcome: Callable[[SweepOutcome], None] | None = None,
    stack_size: int | None = None,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    stack_mode: StackMode = StackMode.EXACT,
) -> list[SweepOutcome]:
    """Trains every unfinished run, skips finished ones, and writes the leaderboard; returns outcomes in rank order.

    Every backbone pair's stores are opened and paired first, so a missing or mismatched store
    stops the sweep before anything trains. Unfinished runs that can share a stacked model train
    in groups of up to `stack_size` (`plan_groups`; 1 trains every run alone; None:
    `default_stack_size`); each group is one task for the scheduler. `stack_mode` picks the
    stacks' exact or fast form (`train.stacked_model.StackMode`); in the fast form a run alone
    trains as a stack of one, so that every run of the sweep resumes in the form it started in.
    """
    stack_size = default_stack_size(device) if stack_size is None else stack_size
    if stack_size < 1:
        raise GridError(f"stack size must be at least 1, got {stack_size}")
    placement = parse_scheduler(scheduler)
    for vision, text in sorted({(run.vision, run.text) for run in runs}):
        pair_stores(*open_pair_stores(cache_dir, dataset, vision, text))
    outcomes: list[SweepOutcome] = []

    def record(outcome: SweepOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    pending = []
    for run in runs:
        finished = read_completed(Path(out_dir) / run.name)
        if finished is None:
            pending.append(run)
        else:
            record(SweepOutcome(run, finished, skipped=True))
    groups = plan_groups(pending, stack_size)
    train_group = functools.partial(train_sweep_group, cache_dir=cache_dir, dataset=dataset, out_dir=out_dir,
                                    device=device, checkpoint_seconds=checkpoint_seconds, stack_mode=stack_mode)
    trained = (((group, train_group(group)) for group in groups) if placement.in_process
               else run_on_dask(placement, train_group, groups))
    for group, results in trained:
        for run, result in zip(group, results):
            record(SweepOutcome(run, result, skipped=False))
    ranked = rank_outcomes(outcomes, rank_by)
    write_leaderboard(ranked, Path(out_dir), rank_by)
    return ranked


def default_stack_size(device: str) -> int:
    """CUDA_STACK_SIZE on CUDA; 1 on the CPU, where an Adaptor step is bound by arithmetic and memory traffic that
    stacking does not reduce (measured at parity: BENCHMARKS.md, "Stacked sweeps")."""
    return CUDA_STACK_SIZE if resolve_device(device).type == "cuda" else 1


def plan_groups(runs: Sequence[SweepRun], stack_size: int) -> list[list[SweepRun]]:
    """The runs as training groups, in grid order: runs on the same image store whose recipes share the stacked
    settings (`train.stacked.stack_key`) go together, whatever their text stores, at most `stack_size` at a time;
    the rest train alone."""
    by_key: dict[tuple, list[SweepRun]] = {}
    for run in runs:
        stacks = stack_size > 1 and stackable(run.recipe)
        key = (run.vision, stack_key(run.recipe)) if stacks else (run.name,)
        by_key.setdefault(key, []).append(run)
    return [members[start:start + stack_size] for members in by_key.values()
            for start in range(0, len(members), stack_size)]


def train_sweep_group(group: Sequence[SweepRun], cache_dir: Path, dataset: str, out_dir: Path, device: str,
                      checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
                      stack_mode: StackMode = StackMode.EXACT) -> list[TrainResult]:
    """Trains one group of `plan_groups` (stacked, or one run alone) into its folders, resuming interrupted runs.

    In the exact form a group of one trains as `train_sweep_run` (the same arithmetic); in the fast form every
    group trains stacked.
    """
    if len(group) == 1 and stack_mode is StackMode.EXACT:
        return [train_sweep_run(group[0], cache_dir, dataset, out_dir, device, checkpoint_seconds)]
    pairings = {text: pair_stores(*open_pair_stores(cache_dir, dataset, group[0].vision, text))
                for text in dict.fromkeys(run.text for run in group)}
    return train_stacked([pairings[run.text] for run in group], [run.recipe for run in group],
                         [Path(out_dir) / run.name for run in group],
                         device=device, resume=True, checkpoint_seconds=checkpoint_seconds, stack_mode=stack_mode)


def train_sweep_run(run: SweepRun, cache_dir: Path, dataset: str, out_dir: Path, device: str,
                    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS) -> TrainResult:
    """Trains one combination into its folder, resuming it when an earlier sweep was interrupted."""
    pairing = pair_stores(*open_pair_stores(cache_dir, dataset, run.vision, run.text))
    return train_adaptor(pairing, run.recipe, Path(out_dir) / run.name, device=device, resume=True,
                         checkpoint_seconds=checkpoint_seconds)


def rank_outcomes(outcomes: Sequence[SweepOutcome], rank_by: Selection) -> list[SweepOutcome]:
    """Best first: highest validation recall@5 (mean of both directions), or lowest validation loss."""
    sign = -1 if rank_by is Selection.RECALL else 1
    return sorted(outcomes, key=lambda outcome: (sign * outcome.result.best_metrics[rank_by.metric], outcome.run.name))


def write_leaderboard(ranked: Sequence[SweepOutcome], out_dir: Path, rank_by: Selection) -> tuple[Path, Path]:
    """The ranked runs as CSV and Markdown: grid settings, size, epochs, best epoch, metrics, wall time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    setting_keys = list(dict.fromkeys(key for outcome in ranked for key in outcome.run.settings
                                      if key not in BACKBONE_KEYS))
    rows = []
    for rank, outcome in enumerate(ranked, start=1):
        result = outcome.result
        rows.append({
            "rank": rank,
            "run": outcome.run.name,
            "vision": outcome.run.vision,
            "text": outcome.run.text,
            **{key: _cell(outcome.run.settings.get(key, "")) for key in setting_keys},
            "trainable_parameters": result.trainable_parameters,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            **{metric: round(result.best_metrics[metric], 4) for metric in LEADERBOARD_METRICS},
            "wall_seconds": round(result.wall_seconds, 1),
        })
    csv_path, markdown_path = out_dir / LEADERBOARD_CSV, out_dir / LEADERBOARD_MARKDOWN
    columns = list(rows[0]) if rows else ["rank", "run"]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"Ranked by validation {'recall@5 (mean of both directions)' if rank_by is Selection.RECALL else 'loss'}"
             " at each run's best epoch.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    markdown_path.write_text("\n".join(lines) + "\n")
    return csv_path, markdown_path


def _backbones(settings: Mapping[str, Any], vision: str | None, text: str | None, source: str) -> tuple[str, str]:
    if PAIR_KEY in settings:
        pair = settings[PAIR_KEY]
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(name, str) for name in pair)):
            raise GridError(f"{source}: key '{PAIR_KEY}' needs [vision, text] name pairs, got {pair!r}")
        return pair[0], pair[1]
    vision, text = settings.get(VISION_KEY, vision), settings.get(TEXT_KEY, text)
    if not (isinstance(vision, str) and isinstance(text, str)):
        raise GridError(f"{source}: no backbones; add '{PAIR_KEY}' (or '{VISION_KEY}' and '{TEXT_KEY}') to the grid "
                        "or pass --vision and --text")
    return vision, text


def _recipe(settings: Mapping[str, Any], base: RecipeName, source: str) -> Recipe:
    try:
        start = RECIPES[RecipeName(settings.get(RECIPE_KEY, base))]
    except ValueError:
        raise GridError(f"{source}: key '{RECIPE_KEY}' must be one of {[name.value for name in RecipeName]}, "
                        f"got {settings[RECIPE_KEY]!r}") from None
    overrides = {key: value for key, value in settings.items() if key not in NON_RECIPE_KEYS}
    try:
        return start.with_overrides(overrides)
    except RecipeError as error:
        raise GridError(f"{source}: {error}") from None


def _run_name(vision: str, text: str, settings: Mapping[str, Any]) -> str:
    """'<vision>+<text>' then '__key-value' for every other grid key, in the grid's order, filesystem-safe."""
    parts = [f"{vision}+{text}"]
    parts += [f"{key}-{_cell(value)}" for key, value in settings.items() if key not in BACKBONE_KEYS]
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", "__".join(parts))


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)
