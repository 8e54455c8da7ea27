"""`adaptor evaluate`: downstream heads, zero-shot, retrieval and segmentation on the cache; the report.

Every command reads cached features only (no backbone runs), writes one result file per run
under --out (by default RUN_DIR/evaluation), and prints its table at the end. `report` turns a
results folder into a Markdown report with plots.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import typer

from adaptor_vlp.cache_schema import IncompleteProvenance, Modality, ProvenanceMismatch, StoreError
from adaptor_vlp.cache_schema.cli import input_errors_exit
from adaptor_vlp.cache_schema.layout import dataset_dir
from adaptor_vlp.cache_schema.manifest import ManifestError, read_manifest
from adaptor_vlp.cache_schema.targets import TargetError
from adaptor_vlp.cache_schema.writes import WriteFailed
from adaptor_vlp.evaluate.classify import ClassificationError, ClassifySettings, UncertainPolicy
from adaptor_vlp.evaluate.commands import DatasetEvaluation, classify_dataset, segment_dataset
from adaptor_vlp.evaluate.features import AdaptorRun, open_adaptor_run
from adaptor_vlp.evaluate.heads import HeadKind, LabelStructure
from adaptor_vlp.evaluate.plots import PLOTS_FOLDER, draw_plots
from adaptor_vlp.evaluate.protocol_heads import ProtocolMismatch
from adaptor_vlp.evaluate.report import render_tables, write_report
from adaptor_vlp.evaluate.results import EvaluatedRun, FeatureSpace, ResultError, read_results, write_result
from adaptor_vlp.evaluate.retrieval import RetrievalSettings, run_retrieval
from adaptor_vlp.evaluate.segment import SegmentationError, SegmentSettings
from adaptor_vlp.evaluate.segmentation_protocol import DecoderName, LossName, SegmentationProtocol
from adaptor_vlp.evaluate.unet_decoder import width_divisor_problem
from adaptor_vlp.evaluate.zeroshot import (
    DEFAULT_PROMPTS,
    PromptError,
    ZeroShotSettings,
    prompt_dataset,
    run_zeroshot,
    write_prompt_manifest,
)
from adaptor_vlp.protocols import HeadTask, Protocol, ProtocolError, load_protocol
from adaptor_vlp.train.checkpoint import CheckpointError, CheckpointKind
from adaptor_vlp.train.encoding import DeviceError
from adaptor_vlp.train.pairs import PairingError

INPUT_ERRORS = (StoreError, ProvenanceMismatch, IncompleteProvenance, ManifestError, CheckpointError, PairingError,
                ClassificationError, PromptError, SegmentationError, ResultError, DeviceError, TargetError,
                ProtocolError, ProtocolMismatch)
"""Errors caused by the command's input: reported as one clear line and exit code 2, not a traceback."""

EVALUATION_FOLDER = "evaluation"
"""Default results folder inside the Adaptor's run folder."""

CACHE_OPTION = typer.Option(Path("cache"), "--cache", help="Cache folder: <dataset>/manifest.csv and the stores.")
DATASET_OPTION = typer.Option("mimic-cxr", "--dataset", help="Dataset name: the folder under --cache.")
CHECKPOINT_OPTION = typer.Option(CheckpointKind.BEST, "--checkpoint", help="Which checkpoint of the run to use.")
SEED_OPTION = typer.Option(0, "--seed", help="Seed of the training subsets, the heads and the bootstrap.")
RESAMPLES_OPTION = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples per confidence interval.")
OUT_OPTION = typer.Option(None, "--out", help="Results folder (default: RUN_DIR/evaluation).")
DEVICE_OPTION = typer.Option("cpu", "--device", help="Where the Adaptor encodes: cpu, cuda, cuda:N or auto.")
FRACTIONS_OPTION = typer.Option("1,10,100", "--fractions", help="Percentages of the training split, comma-separated.")
SPLIT_OPTION = typer.Option("test", "--split", help="Held-out split to evaluate on.")
PROTOCOL_OPTION = typer.Option(None, "--protocol", help="Downstream protocol: published, corrected or a protocol "
                               "TOML file. It decides the head, its training recipe, the subsets and the seeds; the "
                               "manifest must have been written with the same protocol.")

app = typer.Typer(no_args_is_help=True, help="Downstream heads and metrics on the cache.")


@app.command()
def classify(
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Run folder of a trained Adaptor; without it only "
                                           "the backbone baseline is evaluated."),
    vision: Optional[str] = typer.Option(None, "--vision", help="Image backbone (default: the run's)."),
    spaces: list[FeatureSpace] = typer.Option([], "--space", help="Features to evaluate, repeatable (default: "
                                              "adaptor and backbone with --run, else backbone)."),
    head: HeadKind = typer.Option(HeadKind.LINEAR, "--head", help="Linear probe or the paper's MLP head."),
    fractions: str = FRACTIONS_OPTION,
    task: Optional[LabelStructure] = typer.Option(None, "--task",
                                                  help="Default: binary for one label, else multilabel."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated label names (default: all)."),
    uncertain: UncertainPolicy = typer.Option(UncertainPolicy.ZEROS, "--uncertain", help="Uncertain training "
                                              "labels read as negative (zeros) or positive (ones)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the training subsets, the heads and the "
                                       "bootstrap [default: each of the protocol's seeds with --protocol, else 0]."),
    resamples: int = RESAMPLES_OPTION,
    out: Optional[Path] = OUT_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    device: str = DEVICE_OPTION,
    protocol: Optional[str] = PROTOCOL_OPTION,
) -> None:
    """Fit a head on 1/10/100% of the training split, on Adaptor and backbone features; AUROC or accuracy."""
    out_dir = _out_dir(out, run_dir)
    with input_errors_exit(*INPUT_ERRORS):
        chosen = load_protocol(protocol) if protocol else None
        run = _open_run(run_dir, checkpoint, device)
        for run_seed in _seeds(seed, chosen, cache, dataset):
            settings = ClassifySettings(head=head, fractions=_fractions(fractions), seed=run_seed,
                                        n_resamples=resamples)
            evaluation = classify_dataset(cache, dataset, _vision(vision, run), run, _spaces(spaces, run), settings,
                                          task, _names(labels), uncertain, device, chosen)
            _finish_dataset(evaluation, out_dir)


@app.command()
def zeroshot(
    run_dir: Path = typer.Option(..., "--run", help="Run folder of a trained Adaptor."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    prompts: str = typer.Option("chexpert", "--prompts-name", help="Prompt set embedded as dataset prompts-NAME "
                                "(see `adaptor evaluate prompts`)."),
    split: str = SPLIT_OPTION,
    seed: int = SEED_OPTION,
    resamples: int = RESAMPLES_OPTION,
    out: Optional[Path] = OUT_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Score images against class prompts by cosine similarity in Adaptor space; AUROC or accuracy."""
    out_dir = _out_dir(out, run_dir)
    with input_errors_exit(*INPUT_ERRORS):
        run = open_adaptor_run(run_dir, checkpoint, device)
        result = run_zeroshot(cache, dataset, prompts, run, ZeroShotSettings(split, seed, resamples), device)
        _finish([result], out_dir)


@app.command()
def retrieval(
    run_dir: Path = typer.Option(..., "--run", help="Run folder of a trained Adaptor."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    split: str = SPLIT_OPTION,
    seed: int = SEED_OPTION,
    resamples: int = RESAMPLES_OPTION,
    out: Optional[Path] = OUT_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Image <-> text recall@1/5/10 through the Adaptor on a held-out split, with chance level."""
    out_dir = _out_dir(out, run_dir)
    with input_errors_exit(*INPUT_ERRORS):
        run = open_adaptor_run(run_dir, checkpoint, device)
        settings = RetrievalSettings(split=split, seed=seed, n_resamples=resamples)
        _finish([run_retrieval(cache, dataset, run, settings, device)], out_dir)


@app.command()
def segment(
    out: Path = typer.Option(..., "--out", help="Results folder."),
    vision: Optional[str] = typer.Option(None, "--vision", help="Image backbone whose store holds patch tokens "
                                         "(--tokens); default: the run's."),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="Run folder of a trained Adaptor: its image path "
                                           "turns the patch tokens into the decoder's input; without it only the "
                                           "raw-token baseline is evaluated."),
    spaces: list[FeatureSpace] = typer.Option([], "--space", help="Tokens to decode, repeatable (default: adaptor "
                                              "and backbone with --run, else backbone)."),
    cache: Path = CACHE_OPTION,
    dataset: str = DATASET_OPTION,
    fractions: str = FRACTIONS_OPTION,
    epochs: int = typer.Option(SegmentationProtocol.max_epochs, "--epochs", min=1,
                               help="Most decoder epochs (validation every 3, published early stopping)."),
    decoder: DecoderName = typer.Option(SegmentationProtocol.decoder, "--decoder",
                                        help="Decoder: the published ViT decoder, or the light one."),
    loss: LossName = typer.Option(SegmentationProtocol.loss, "--loss", help="Training loss."),
    segmentation_size: Optional[int] = typer.Option(None, "--segmentation-size", min=14, help="Read the "
                                                    "segmentation store of this size (`extract images "
                                                    "--segmentation-size`: the whole image resized, as the "
                                                    "published runs read SIIM at 896, RSNA at 224); default: the "
                                                    "plain store, in the backbone's own frame."),
    segmentation_views: int = typer.Option(0, "--segmentation-views", min=0, help="With --segmentation-size: train "
                                           "on its K augmented view stores (`extract images --segmentation-views "
                                           "K`), view ((epoch - 1) mod K) + 1 at each epoch."),
    mask_size: Optional[int] = typer.Option(None, "--mask-size", min=4, help="Mask side in pixels (default: the "
                                            "store's input image size, where the published code scored masks; "
                                            "the light decoder's own output size)."),
    unet_width_divisor: Optional[int] = typer.Option(None, "--unet", min=1, help="Decode with the published "
                                                     "ResNet-AE U-Net over the store's feature maps (`extract "
                                                     "images --feature-maps`) instead of patch tokens, its widths "
                                                     "divided by this (1: the published model)."),
    seed: int = SEED_OPTION,
    resamples: int = RESAMPLES_OPTION,
    checkpoint: CheckpointKind = CHECKPOINT_OPTION,
    device: str = DEVICE_OPTION,
) -> None:
    """Train a decoder on cached patch tokens (raw, or through the Adaptor's image path), or the U-Net on cached
    feature maps, at 1/10/100% of train, with the published decoder, loss and schedule by default; Dice and IoU,
    all and positive-only."""
    if segmentation_views and segmentation_size is None:
        raise typer.BadParameter("augmented views are stores of the whole image at a segmentation size; give "
                                 "--segmentation-size too", param_hint="--segmentation-views")
    if unet_width_divisor is not None and width_divisor_problem(unet_width_divisor):
        raise typer.BadParameter(width_divisor_problem(unet_width_divisor), param_hint="--unet")
    recipe = replace(SegmentationProtocol(), max_epochs=epochs, decoder=decoder, loss=loss,
                     image_size=segmentation_size, views=segmentation_views)
    settings = SegmentSettings(fractions=_fractions(fractions), seed=seed, n_resamples=resamples, recipe=recipe,
                               mask_size=mask_size, unet_width_divisor=unet_width_divisor)
    with input_errors_exit(*INPUT_ERRORS):
        run = _open_run(run_dir, checkpoint, device)
        evaluation = segment_dataset(cache, dataset, _vision(vision, run), run, _spaces(spaces, run), settings, device)
        _finish_dataset(evaluation, out)


@app.command()
def prompts(
    cache: Path = CACHE_OPTION,
    name: str = typer.Option("chexpert", "--name", help="Prompt set name: its dataset is prompts-NAME."),
    prompts_file: Path = typer.Option(DEFAULT_PROMPTS, "--prompts", help="TOML file of class prompts "
                                      "(default: the bundled CheXpert prompts)."),
    text: Optional[str] = typer.Option(None, "--text", help="Text backbone, for the next command shown."),
) -> None:
    """Write the manifest of a prompt set, for `adaptor extract texts` to embed (evaluate runs no backbone)."""
    with input_errors_exit(*INPUT_ERRORS):
        csv_path = write_prompt_manifest(cache, name, prompts_file)
    typer.echo(f"wrote {csv_path} from {prompts_file}")
    typer.echo(f"next: adaptor extract texts --cache {cache} --dataset {prompt_dataset(name)} "
               f"--backbone {text or 'TEXT'}")
    typer.echo("(add --overwrite when the prompts changed since the store was extracted)")


@app.command()
def report(
    results: Path = typer.Option(..., "--results", help="Results folder written by the other commands."),
) -> None:
    """Write RESULTS/report.md (tables 1/10/100% side by side, provenance) and RESULTS/plots/*.png."""
    with input_errors_exit(*INPUT_ERRORS):
        stored = read_results(results)
        if not stored:
            raise ResultError(f"{results}: no result files; run an evaluate command with --out {results} first")
        plots = draw_plots(stored, results / PLOTS_FOLDER)
        path = write_report(results, plots)
    typer.echo(render_tables([entry.record for entry in stored]))
    typer.echo(f"report: {path} ({len(plots)} plots in {results / PLOTS_FOLDER})")


def _finish_dataset(evaluation: DatasetEvaluation, out_dir: Path) -> None:
    """Says which store rows were left out, then writes and prints the results."""
    _echo_dropped(evaluation.dropped)
    _finish(evaluation.runs, out_dir)


def _finish(runs: Sequence[EvaluatedRun], out_dir: Path) -> None:
    """Writes each run's result file and prints where, then the table of these results."""
    with input_errors_exit():
        for written, evaluated in enumerate(runs):
            try:
                write_result(evaluated.record, out_dir, evaluated.arrays)
            except WriteFailed as error:
                raise WriteFailed(f"{error}. {written} of {len(runs)} result files of this command were written to "
                                  f"{out_dir} and are kept; free space and rerun the same command (it evaluates "
                                  "again and rewrites them all)") from error
    typer.echo(f"wrote {len(runs)} result file(s) to {out_dir / runs[0].record.context.dataset}")
    typer.echo(render_tables([evaluated.record for evaluated in runs]))


def _out_dir(out: Path | None, run_dir: Path | None) -> Path:
    if out is not None:
        return out
    if run_dir is None:
        raise typer.BadParameter("give a results folder (there is no --run to put it in)", param_hint="--out")
    return run_dir / EVALUATION_FOLDER


def _open_run(run_dir: Path | None, kind: CheckpointKind, device: str) -> AdaptorRun | None:
    return None if run_dir is None else open_adaptor_run(run_dir, kind, device)


def _vision(vision: str | None, run: AdaptorRun | None) -> str:
    if vision is not None:
        return vision
    if run is None:
        raise typer.BadParameter("name the image backbone (or give --run to take the run's)", param_hint="--vision")
    return run.trained_on(Modality.IMAGE)["backbone"]


def _spaces(spaces: list[FeatureSpace], run: AdaptorRun | None) -> list[FeatureSpace]:
    if not spaces:
        return [FeatureSpace.ADAPTOR, FeatureSpace.BACKBONE] if run is not None else [FeatureSpace.BACKBONE]
    if FeatureSpace.ADAPTOR in spaces and run is None:
        raise typer.BadParameter("Adaptor features need --run RUN_DIR", param_hint="--space")
    return list(dict.fromkeys(spaces))


def _seeds(seed: int | None, protocol: Protocol | None, cache: Path, dataset: str) -> tuple[int, ...]:
    """The seed given, else the seeds of the protocol's classification task for the manifest's dataset, else 0."""
    if seed is not None:
        return (seed,)
    if protocol is None:
        return (0,)
    layout = read_manifest(dataset_dir(cache, dataset)).dataset
    return protocol.task(layout, HeadTask.CLASSIFY).training.seeds


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint="--fractions") from None
    if not values or any(not 0 < value <= 100 for value in values):
        raise typer.BadParameter(f"{text!r}: every percentage must lie in (0, 100]", param_hint="--fractions")
    return tuple(sorted(set(values)))


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _echo_dropped(dropped: dict[str, int]) -> None:
    for reason, count in sorted(dropped.items()):
        typer.echo(f"left out {count:>6}  {reason}")
