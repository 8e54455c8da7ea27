"""`adaptor train`: train an Adaptor from the cache, sweep a grid of settings, embed a store with a trained Adaptor."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional

import typer

from adaptor_vlp.cache_schema import IncompleteProvenance, Modality, Provenance, ProvenanceMismatch, StoreError
from adaptor_vlp.cache_schema.cli import input_errors_exit
from adaptor_vlp.cache_schema.cluster import SCHEDULER_HELP, SchedulerError
from adaptor_vlp.train.checkpoint import CheckpointError, CheckpointKind
from adaptor_vlp.train.embed import embed_store
from adaptor_vlp.train.encoding import DeviceError
from adaptor_vlp.train.loop import (
    DEFAULT_CHECKPOINT_SECONDS,
    RunFolderError,
    TrainingDiverged,
    TrainResult,
    train_adaptor,
)
from adaptor_vlp.train.model import AdaptorInputs
from adaptor_vlp.train.pairs import PairingError, open_pair_stores, pair_stores
from adaptor_vlp.train.recipe import RECIPES, Recipe, RecipeError, RecipeName, Selection
from adaptor_vlp.train.stacked_model import StackError, StackMode
from adaptor_vlp.train.sweep import CUDA_STACK_SIZE, GridError, SweepOutcome, expand_grid, read_grid, run_sweep

INPUT_ERRORS = (StoreError, ProvenanceMismatch, IncompleteProvenance, PairingError, RecipeError, RunFolderError,
                CheckpointError, GridError, SchedulerError, DeviceError, TrainingDiverged, StackError)
"""Errors caused by the command's input (stores, settings, folders): one clear line and exit code 2, no traceback."""

CACHE_OPTION = typer.Option(Path("cache"), "--cache", help="Cache folder holding <dataset>/<modality>/<backbone>.zarr.")
DATASET_OPTION = typer.Option("mimic-cxr", "--dataset", help="Dataset name: the folder under --cache.")
DEVICE_OPTION = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto (cuda when available).")
RECIPE_OPTION = typer.Option(RecipeName.PAPER, "--recipe", help="Starting settings: the paper's, or the quick demo's.")
CHECKPOINT_SECONDS_OPTION = typer.Option(DEFAULT_CHECKPOINT_SECONDS, "--checkpoint-seconds", min=0.0,
                                         help="Write checkpoints at most this often (and after the last epoch); "
                                              "0: every epoch. A killed run redoes at most this much on --resume.")

RECIPE_OPTION_NAMES = frozenset(field.name for field in fields(Recipe))
"""`run` options named after recipe settings; given ones override the chosen --recipe."""

app = typer.Typer(no_args_is_help=True, help="Train the Adaptor from cached embeddings.")


@app.command()
def run(
    vision: str = typer.Option(..., "--vision", help="Image backbone whose store to train on."),
    text: str = typer.Option(..., "--text", help="Text backbone whose store to train on."),
    out: Path = typer.Option(..., "--out", help="Run folder for checkpoints, metrics and the learning curve."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    recipe: RecipeName = RECIPE_OPTION,
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=2),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (AdamW)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    warmup_fraction: Optional[float] = typer.Option(None, "--warmup-fraction", help="Share of steps warming up."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Max global gradient norm."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Epochs without improvement before stopping "
                                           "(0: never stop early)."),
    select_by: Optional[Selection] = typer.Option(None, "--select-by", help="Best epoch by validation loss or "
                                                  "recall@5."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    subset_seed: Optional[int] = typer.Option(None, "--subset-seed", help="Seed of the --data-pct subset."),
    data_pct: Optional[float] = typer.Option(None, "--data-pct", help="Percent of the training pairs to use."),
    use_views: Optional[bool] = typer.Option(None, "--use-views/--no-use-views", help="Sample a cached augmented "
                                             "view per image per epoch when the image store has views."),
    inputs: Optional[AdaptorInputs] = typer.Option(None, "--inputs", help="Pooled vectors or token sequences."),
    image_weight: Optional[float] = typer.Option(None, "--image-weight", help="Loss weight of image retrieval."),
    projection_dim: Optional[int] = typer.Option(None, "--projection-dim"),
    num_layers: Optional[int] = typer.Option(None, "--num-layers"),
    num_heads: Optional[int] = typer.Option(None, "--num-heads"),
    ffn_dim: Optional[int] = typer.Option(None, "--ffn-dim"),
    dropout: Optional[float] = typer.Option(None, "--dropout"),
    token_window_shards: Optional[int] = typer.Option(None, "--token-window-shards", help="Image shards held in "
                                                      "memory at once with --inputs tokens."),
    expect_image: list[str] = typer.Option([], "--expect-image", help="FIELD=VALUE the image store's provenance "
                                           "must hold, e.g. weights_sha256=...; repeatable."),
    expect_text: list[str] = typer.Option([], "--expect-text", help="FIELD=VALUE for the text store; repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    checkpoint_seconds: float = CHECKPOINT_SECONDS_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Train an Adaptor on an image store and a text store joined by study id."""
    overrides = {name: value for name, value in locals().items() if name in RECIPE_OPTION_NAMES and value is not None}
    with input_errors_exit(*INPUT_ERRORS):
        settings = RECIPES[recipe].with_overrides(overrides)
        stores = open_pair_stores(cache, dataset, vision, text, _expectation(expect_image, "--expect-image"),
                                  _expectation(expect_text, "--expect-text"))
        pairing = pair_stores(*stores)
        for reason, count in sorted(pairing.left_out.items()):
            typer.echo(f"left out {count:>6}  {reason}")
        result = train_adaptor(pairing, settings, out, device=device, resume=resume,
                               on_epoch=lambda row: typer.echo(_epoch_line(row, settings.epochs)),
                               checkpoint_seconds=checkpoint_seconds)
    typer.echo(_final_line(result))


@app.command()
def sweep(
    grid: Path = typer.Option(..., "--grid", help="TOML or YAML file: setting name -> list of values."),
    out: Path = typer.Option(..., "--out", help="Folder for one run folder per combination and the leaderboard."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    recipe: RecipeName = RECIPE_OPTION,
    vision: Optional[str] = typer.Option(None, "--vision", help="Image backbone where the grid names none."),
    text: Optional[str] = typer.Option(None, "--text", help="Text backbone where the grid names none."),
    rank_by: Selection = typer.Option(Selection.RECALL, "--rank-by", help="Leaderboard order."),
    scheduler: str = typer.Option("none", "--scheduler", help=SCHEDULER_HELP),
    stack: Optional[int] = typer.Option(None, "--stack", min=1, help="Train up to this many combinations as one "
                                        "stacked model when they share the image store (text stores may differ), "
                                        "Adaptor shape, batch size and data "
                                        "subset (same results as one at a time); 1: one at a time. Default: "
                                        f"{CUDA_STACK_SIZE} on CUDA, 1 on the CPU (no faster there)."),
    stack_mode: StackMode = typer.Option(StackMode.EXACT, "--stack-mode", help="How a stack computes its points: "
                                         "exact (each point's own AdamW, norms and loss: its weights bit for bit "
                                         "its solo run's on the CPU) or fast (fused AdamW steps and batched norms and "
                                         "loss over the stack: faster, near the solo run but not equal to it, "
                                         "drifting as epochs go on). Recorded; a resume "
                                         "under the other mode is refused."),
    checkpoint_seconds: float = CHECKPOINT_SECONDS_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Train every combination of a grid (skipping finished ones) and write a leaderboard."""
    with input_errors_exit(*INPUT_ERRORS):
        runs = expand_grid(read_grid(grid), recipe, vision, text, source=str(grid))
        typer.echo(f"{len(runs)} combinations in {grid}")
        ranked = run_sweep(runs, cache, dataset, out, device=device, scheduler=scheduler, rank_by=rank_by,
                           on_outcome=lambda outcome: typer.echo(_outcome_line(outcome)), stack_size=stack,
                           checkpoint_seconds=checkpoint_seconds, stack_mode=stack_mode)
    best = ranked[0]
    typer.echo(f"leaderboard: {out / 'leaderboard.md'}; best {best.run.name} "
               f"(val recall@5 {best.result.best_metrics['val_recall@5']:.3f})")


@app.command()
def embed(
    run_dir: Path = typer.Option(..., "--run", help="Run folder of a trained Adaptor."),
    modality: Modality = typer.Option(..., "--modality", help="Embed the image store or the text store."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", help="Store to write (default: the cache's "
                                       "<dataset>/<modality>/<backbone>+adaptor-<run>.zarr)."),
    checkpoint: CheckpointKind = typer.Option(CheckpointKind.BEST, "--checkpoint", help="Which checkpoint to use."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1),
    device: str = DEVICE_OPTION,
) -> None:
    """Write Adaptor-space embeddings of a dataset's store as a new cache store."""
    with input_errors_exit(*INPUT_ERRORS):
        result = embed_store(run_dir, cache, dataset, modality, out, checkpoint, device, batch_size)
    typer.echo(f"embedded {result.rows} rows ({result.shards_written} shards written, "
               f"{result.shards_already_done} already done, {result.failed_rows} invalid in the source) "
               f"into {result.store}")


def _expectation(pairs: list[str], option: str) -> dict[str, Any]:
    """FIELD=VALUE options as a provenance expectation; VALUE is read as JSON when it parses, else as text."""
    known = {field.name for field in fields(Provenance)}
    expectation = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or name not in known:
            raise typer.BadParameter(f"{pair!r}: expected FIELD=VALUE with FIELD one of {sorted(known)}",
                                     param_hint=option)
        try:
            expectation[name] = json.loads(value)
        except json.JSONDecodeError:
            expectation[name] = value
    return expectation


def _epoch_line(row: dict[str, float], epochs: int) -> str:
    return (f"epoch {int(row['epoch']):>3}/{epochs}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}"
            f"  val recall@1/5/10 {row['val_recall@1']:.3f}/{row['val_recall@5']:.3f}/{row['val_recall@10']:.3f}"
            f"  {row['seconds']:.2f}s")


def _final_line(result: TrainResult) -> str:
    stop = "stopped early" if result.stopped_early else "all epochs"
    return (f"best epoch {result.best_epoch} of {result.epochs_run} ({stop}): val recall@5 "
            f"{result.best_metrics['val_recall@5']:.3f}, val loss {result.best_metrics['val_loss']:.4f}; "
            f"{result.trainable_parameters:,} trainable parameters; checkpoint {result.best_checkpoint}")


def _outcome_line(outcome: SweepOutcome) -> str:
    status = "already finished" if outcome.skipped else f"trained in {outcome.result.wall_seconds:.0f}s"
    return (f"{outcome.run.name}: {status}, best epoch {outcome.result.best_epoch}, "
            f"val recall@5 {outcome.result.best_metrics['val_recall@5']:.3f}")
