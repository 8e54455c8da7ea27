"""`adaptor export RUN OUT` and `adaptor predict embed|zeroshot|retrieve`: a trained model on new radiographs.

Every predict command takes `--model` (an exported folder or a run folder) and `--images`
(files or folders, repeatable). Unreadable inputs are listed with their reason on stderr and the
rest go on. Nothing here prints report text: retrieved reports are named by their store id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaptor_vlp.cache_schema import IncompleteProvenance, ProvenanceMismatch, StoreError
from adaptor_vlp.cache_schema.cli import input_errors_exit
from adaptor_vlp.cache_schema.ids import InvalidId
from adaptor_vlp.evaluate.results import ResultError
from adaptor_vlp.evaluate.zeroshot import PromptError
from adaptor_vlp.extract.backbone_spec import SpecError
from adaptor_vlp.extract.weights import IncompatibleWeights, MissingWeights
from adaptor_vlp.inference.backbones import BackboneMismatch
from adaptor_vlp.inference.export import best_run, export_run
from adaptor_vlp.inference.inputs import Unreadable, collect_images
from adaptor_vlp.inference.model import BUILTIN_PROMPTS, AdaptorModel
from adaptor_vlp.inference.outputs import EmbeddingFormat, write_embeddings, write_table
from adaptor_vlp.inference.record import CONFIG_FILE, ModelFolderError
from adaptor_vlp.inference.retrieve import retrieve_reports
from adaptor_vlp.train.checkpoint import CheckpointError, CheckpointKind, checkpoint_paths
from adaptor_vlp.train.encoding import DeviceError
from adaptor_vlp.train.recipe import Selection

INPUT_ERRORS = (ModelFolderError, BackboneMismatch, MissingWeights, IncompatibleWeights, SpecError, PromptError,
                StoreError, ProvenanceMismatch, IncompleteProvenance, CheckpointError, DeviceError, ResultError,
                InvalidId)
"""Errors caused by the command's input: one line on stderr and exit code 2."""
IMAGE_COLUMN_WIDTH = 14
Result = TypeVar("Result")
"""Characters per image column of the printed scores table (file names fold onto several lines)."""

MODEL_OPTION = typer.Option(..., "--model", help="An exported model folder (adaptor export) or a run folder.")
IMAGES_OPTION = typer.Option(..., "--images", help="An image file (JPEG, PNG, DICOM) or a folder of them; repeatable.")
DEVICE_OPTION = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto (cuda when available).")
BATCH_OPTION = typer.Option(16, "--batch-size", min=1, help="Images per forward pass.")
CHECKPOINT_OPTION = typer.Option(CheckpointKind.BEST, "--checkpoint", help="For a run folder: which checkpoint.")
IMAGE_WEIGHTS_OPTION = typer.Option(None, "--image-weights", help="The image backbone's weights file or folder, "
                                                                  "as `adaptor extract --weights`.")
TEXT_WEIGHTS_OPTION = typer.Option(None, "--text-weights", help="The text backbone's weights folder.")
REGISTRY_OPTION = typer.Option(None, "--registry", help="Registry file defining a backbone that is not built in; "
                                                        "repeatable.")

predict_app = typer.Typer(no_args_is_help=True, help="Embed, score or match new radiographs with a trained model.")


def export(
    run: Path = typer.Argument(..., help="A run folder, or a folder of run folders (the best finished one is taken)."),
    out: Path = typer.Argument(..., help="The folder to write (new, or a previous export to replace)."),
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    results: Optional[Path] = typer.Option(None, "--results", help="Evaluation results for the model card: a "
                                                                   "results folder or one above several (a study's "
                                                                   "results/); default RUN/evaluation."),
    select_by: Optional[Selection] = typer.Option(None, "--select-by", help="Among several runs: the validation "
                                                                            "metric that picks the best."),
    registry: Optional[list[Path]] = REGISTRY_OPTION,
) -> None:
    """Export a run's Adaptor with its configuration, backbones' records and a model card (config.json,
    model.safetensors, README.md): no pickle, no absolute path."""
    with input_errors_exit(*INPUT_ERRORS):
        chosen = run
        if not (run / CONFIG_FILE).is_file() and not checkpoint_paths(run, checkpoint).record.is_file():
            chosen = best_run(run, select_by)
            typer.echo(f"best run under {run}: {chosen.name}", err=True)
        written = export_run(chosen, out, checkpoint, results, tuple(registry or ()))
    typer.echo(f"exported {chosen.name} ({checkpoint.value} checkpoint) -> {written}")


@predict_app.command()
def embed(
    model: Path = MODEL_OPTION,
    images: list[Path] = IMAGES_OPTION,
    out: Path = typer.Option(..., "--out", help="A .zarr store in the cache format, or a .npy file (with an "
                                                "ids CSV beside it, <name>.ids.csv)."),
    device: str = DEVICE_OPTION,
    batch_size: int = BATCH_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    image_weights: Optional[Path] = IMAGE_WEIGHTS_OPTION,
    registry: Optional[list[Path]] = REGISTRY_OPTION,
) -> None:
    """Adaptor-space embeddings of new radiographs."""
    try:
        EmbeddingFormat.of(out)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from None
    with input_errors_exit(*INPUT_ERRORS):
        loaded = _load(model, device, checkpoint, image_weights, None, registry)
        embedded = _with_progress(images, lambda done: loaded.embed_images(images, batch_size, done))
        written = write_embeddings(loaded, embedded, out)
    _report_unreadable(embedded.unreadable)
    typer.echo(f"embedded {len(embedded.names)} images ({len(embedded.unreadable)} unreadable) -> "
               f"{', '.join(str(path) for path in written)}")


@predict_app.command()
def zeroshot(
    model: Path = MODEL_OPTION,
    images: list[Path] = IMAGES_OPTION,
    out: Path = typer.Option(..., "--out", help="CSV: one row per readable image, its path and a score per label."),
    prompts: str = typer.Option("chexpert", "--prompts", help=f"A built-in prompt set ({', '.join(BUILTIN_PROMPTS)}) "
                                                              "or a prompts TOML file (see adaptor evaluate prompts)."),
    device: str = DEVICE_OPTION,
    batch_size: int = BATCH_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    image_weights: Optional[Path] = IMAGE_WEIGHTS_OPTION,
    text_weights: Optional[Path] = TEXT_WEIGHTS_OPTION,
    registry: Optional[list[Path]] = REGISTRY_OPTION,
    show: int = typer.Option(4, "--show", min=0, help="Print the scores of this many images (0: none)."),
) -> None:
    """Zero-shot scores of new radiographs against class prompts (default: the CheXpert set)."""
    with input_errors_exit(*INPUT_ERRORS):
        loaded = _load(model, device, checkpoint, image_weights, text_weights, registry)
        scored = _with_progress(images, lambda done: loaded.zeroshot(images, prompts, batch_size, done))
        rows = [[name, *(f"{value:.4f}" for value in row)] for name, row in zip(scored.names, scored.scores)]
        write_table(out, ["image", *scored.class_names], rows)
    _report_unreadable(scored.unreadable)
    if show and rows:
        _print_scores(scored.class_names, rows[:show], len(rows))
    typer.echo(f"scored {len(rows)} images ({len(scored.unreadable)} unreadable) on {len(scored.class_names)} "
               f"labels -> {out}")


@predict_app.command()
def retrieve(
    model: Path = MODEL_OPTION,
    images: list[Path] = IMAGES_OPTION,
    cache: Path = typer.Option(..., "--cache", help="Cache folder holding <dataset>/text/<text backbone>.zarr."),
    out: Path = typer.Option(..., "--out", help="CSV: per image, its top-k report ids with cosine similarities."),
    dataset: str = typer.Option("mimic-cxr", "--dataset", help="Dataset whose report store to search."),
    k: int = typer.Option(5, "--k", min=1, help="Reports per image."),
    device: str = DEVICE_OPTION,
    batch_size: int = BATCH_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    image_weights: Optional[Path] = IMAGE_WEIGHTS_OPTION,
    registry: Optional[list[Path]] = REGISTRY_OPTION,
) -> None:
    """The nearest reports (by id, never their text) of a cache's text store for new radiographs."""
    with input_errors_exit(*INPUT_ERRORS):
        loaded = _load(model, device, checkpoint, image_weights, None, registry)
        found = _with_progress(images, lambda done: retrieve_reports(loaded, images, cache, dataset, k, batch_size,
                                                                     done))
        rows = [[name, rank, report_id, f"{score:.4f}"]
                for name, ids, scores in zip(found.names, found.report_ids, found.scores)
                for rank, (report_id, score) in enumerate(zip(ids, scores), start=1)]
        write_table(out, ["image", "rank", "report_id", "cosine"], rows)
    _report_unreadable(found.unreadable)
    typer.echo(f"matched {len(found.names)} images ({len(found.unreadable)} unreadable) to their top "
               f"{found.report_ids.shape[1] if len(found.names) else k} reports of {found.store} -> {out}")


def _load(model: Path, device: str, checkpoint: CheckpointKind, image_weights: Path | None,
          text_weights: Path | None, registry: Sequence[Path] | None) -> AdaptorModel:
    weights = {name: path for name, path in (("image", image_weights), ("text", text_weights)) if path is not None}
    return AdaptorModel.from_pretrained(model, device, checkpoint, weights, tuple(registry or ()))


def _with_progress(images: Sequence[Path], work: Callable[[Callable[[int], None]], Result]) -> Result:
    """Runs `work` with a progress bar over the inputs on stderr (advanced by `work`'s callback)."""
    total = len(collect_images(images))
    with Progress(TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as progress:
        task = progress.add_task("images", total=total)
        return work(lambda done: progress.advance(task, done))


def _print_scores(class_names: Sequence[str], rows: list[list[str]], total: int) -> None:
    """A table on stdout: one row per label, one column per image shown (by file name)."""
    table = Table(title=f"zero-shot scores: {len(rows)} of {total} images")
    table.add_column("label", no_wrap=True)
    for row in rows:
        table.add_column(Path(row[0]).name, justify="right", overflow="fold", max_width=IMAGE_COLUMN_WIDTH)
    for position, name in enumerate(class_names, start=1):
        table.add_row(name, *(row[position] for row in rows))
    label_width = max(len(name) for name in class_names)
    Console(width=label_width + 8 + (IMAGE_COLUMN_WIDTH + 3) * len(rows)).print(table)


def _report_unreadable(unreadable: Sequence[Unreadable]) -> None:
    for item in unreadable:
        typer.echo(f"unreadable: {item.name}: {item.reason}", err=True)
