"""`adaptor extract`: the extract stage's commands."""
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch
import typer

from adaptor_vlp.cache_schema import Modality, ProvenanceMismatch, StoreError
from adaptor_vlp.cache_schema.cli import input_errors_exit
from adaptor_vlp.cache_schema.cluster import SCHEDULER_HELP, SchedulerError
from adaptor_vlp.cache_schema.manifest import Manifest, ManifestError, excluded_file, write_manifest
from adaptor_vlp.extract.backbones import REGISTRY_ENV, SpecError, UnknownBackbone, load_registry
from adaptor_vlp.extract.datasets.chexpert import BlankPolicy, ChexpertUncertainPolicy
from adaptor_vlp.extract.datasets.mimic_cxr import DEFAULT_VIEWS, SectionParser
from adaptor_vlp.extract.datasets.registry import LAYOUTS, ManifestDataset, dataset_layout, layouts_accepting
from adaptor_vlp.extract.demo import MIN_SUBJECTS, write_demo_dataset
from adaptor_vlp.extract.demo.downstream_trees import DEMO_TREES, DemoTree
from adaptor_vlp.extract.device_decoding import Decoder
from adaptor_vlp.extract.encoders import NoFeatureMaps
from adaptor_vlp.extract.image_transforms import DecodeSize, DecodeSizeTooSmall
from adaptor_vlp.extract.job import ExtractionJob, PassError
from adaptor_vlp.extract.pipeline import ReportEncodingFailed
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.protocol_manifest import apply_protocol, protocol_kind
from adaptor_vlp.extract.run import ExtractionSummary, run_multi_extraction
from adaptor_vlp.extract.weights import IncompatibleWeights, MissingWeights, weights_available
from adaptor_vlp.protocols import HeadTask, load_protocol

RUN_ERRORS = (ManifestError, MissingWeights, IncompatibleWeights, UnknownBackbone, SpecError, ProvenanceMismatch,
              StoreError, SchedulerError, ReportEncodingFailed, PassError, DecodeSizeTooSmall, NoFeatureMaps)
"""Errors caused by the command's input: reported as one clear line and exit code 2, not a traceback."""

CACHE_OPTION = typer.Option(Path("cache"), "--cache",
                            help="Cache folder holding <dataset>/manifest.csv and the stores.")
DATASET_OPTION = typer.Option("mimic-cxr", "--dataset", help="Dataset name: the folder under --cache.")
WEIGHTS_OPTION = typer.Option(None, "--weights",
                              help="Local checkpoint file or folder (else the local Hugging Face cache).")
TOKENS_OPTION = typer.Option(False, "--tokens", help="Also store token embeddings (patch / word tokens with mask).")
BATCH_OPTION = typer.Option(32, "--batch-size", min=1, help="Samples per forward pass.")
DEVICE_OPTION = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto (cuda when available).")
PRECISION_OPTION = typer.Option(Precision.AUTO, "--precision", help="Forward-pass arithmetic, recorded in the store: "
                                "auto is bfloat16 on CUDA and float32 on the CPU; bfloat16 on a CPU is fast only "
                                "with AMX or AVX512-BF16.")
SHARD_OPTION = typer.Option(None, "--shard-rows", min=1, help="Rows per shard (the unit of work and resume); "
                            "default sized to ~128 MiB of the widest array, at most 4096.")
SCHEDULER_OPTION = typer.Option("none", "--scheduler", help=SCHEDULER_HELP)
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Delete an existing store and start over.")
REGISTRY_OPTION = typer.Option([], "--registry", help=f"A registry TOML file with more backbones (repeatable; also "
                               f"read from ${REGISTRY_ENV}, separated like PATH).")
VERBOSE_OPTION = typer.Option(False, "--verbose", help="Let the backbone libraries print their load reports and "
                              "progress bars.")

app = typer.Typer(no_args_is_help=True, help="Run frozen backbones once over a dataset into the cache.")


@app.command()
def images(
    backbone: str = typer.Option(..., "--backbone", help="Image backbone: a name from `adaptor extract backbones`, "
                                 "timm:<model name with tag> or hf:<hub id>; several, comma-separated, run in one "
                                 "pass (each image decoded once) into one store each."),
    dataset: str = DATASET_OPTION,
    cache: Path = CACHE_OPTION,
    weights: Path = WEIGHTS_OPTION,
    tokens: bool = TOKENS_OPTION,
    views: int = typer.Option(0, "--views", min=0, help="Also store K seeded augmented views of every image."),
    feature_maps: bool = typer.Option(False, "--feature-maps", help="Also store a CNN's four intermediate maps "
                                      "(1/2 .. 1/16 of its input; compressed float16, megabytes per image), the "
                                      "skip connections of the published ResNet-AE U-Net (`evaluate segment`)."),
    segmentation_size: int = typer.Option(None, "--segmentation-size", min=14, help="For a segmentation "
                                                    "task: read the whole image resized to this square, as the "
                                                    "published runs did (SIIM 896, RSNA 224), instead of the "
                                                    "backbone's own steps, into the store <backbone>.seg<size> "
                                                    "beside the plain one (`evaluate segment --segmentation-size` "
                                                    "reads it)."),
    segmentation_views: int = typer.Option(0, "--segmentation-views", min=0, help="With --segmentation-size: also "
                                           "write K stores of seeded ShiftScaleRotate views (the published "
                                           "augmentation), <backbone>.seg<size>.view1 ... .viewK, with the same "
                                           "--tokens / --feature-maps, for the decoder's training."),
    batch_size: int = BATCH_OPTION,
    workers: int = typer.Option(2, "--workers", min=0, help="Decoders reading images ahead of the forward pass: "
                                "worker processes, or threads in each Dask shard task."),
    device: str = DEVICE_OPTION,
    precision: Precision = PRECISION_OPTION,
    shard_rows: int = SHARD_OPTION,
    image_root: Path = typer.Option(None, "--image-root", help="Images moved since the manifest was written: read "
                                    "them under this root instead."),
    scheduler: str = SCHEDULER_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    registry: list[Path] = REGISTRY_OPTION,
    verbose: bool = VERBOSE_OPTION,
    decode_size: str = typer.Option("auto", "--decode-size", help="How large images are decoded before the "
                                    "backbones' steps (recorded in each store): 'full', a shorter side in pixels "
                                    "(JPEGs then decode at reduced DCT scale), or auto: what the largest input "
                                    "among the backbones needs: the registry's measured size where it states one "
                                    "(512 for the paper's DINOv2 entries), else full resolution for an area resize "
                                    "(ResNet-AE), else the first resize. 'full' is the paper's exact decode."),
    decoder: Decoder = typer.Option(Decoder.CPU, "--decoder", help="What decodes JPEGs: cpu (Pillow, in the "
                                    "--workers) or gpu (torchvision's decode_jpeg on the CUDA --device, a batch at "
                                    "a time; recorded in each store, whose bits differ from the CPU's)."),
) -> None:
    """Embed every image of a dataset's manifest with frozen image backbones, one store each."""
    with input_errors_exit(ValueError):  # an option that does not parse, named
        names = _backbone_names(backbone, weights)
        decode = None if decode_size == "auto" else DecodeSize.parse(decode_size)
    chosen_device = _device(device)
    if decoder is Decoder.GPU and not chosen_device.startswith("cuda"):
        raise typer.BadParameter(f"--decoder gpu decodes on the CUDA device; --device is {chosen_device!r}: give "
                                 "--device cuda, or --decoder cpu", param_hint="--decoder")
    job = ExtractionJob(cache, dataset, Modality.IMAGE, names[0], weights=weights, tokens=tokens, views=views,
                        batch_size=batch_size, num_workers=workers, device=chosen_device, precision=precision,
                        shard_rows=shard_rows, image_root=image_root, registry=tuple(registry), verbose=verbose,
                        decode_size=decode, decoder=decoder, feature_maps=feature_maps,
                        segmentation_size=segmentation_size)
    with input_errors_exit(ValueError):  # views without a segmentation size, refused before anything runs
        view_jobs = [dataclasses.replace(job, segmentation_view=view, views=0)
                     for view in range(1, segmentation_views + 1)]
    for pass_job in (job, *view_jobs):
        _extract([dataclasses.replace(pass_job, backbone=name) for name in names], overwrite, scheduler)


def _backbone_names(option: str, weights: Path | None) -> list[str]:
    """The --backbone list; ValueError naming the option when it is empty or --weights cannot say whose it is."""
    names = [name.strip() for name in option.split(",")]
    if not all(names):
        raise ValueError(f"--backbone {option!r}: an empty name; separate backbone names by single commas")
    if weights is not None and len(names) > 1:
        raise ValueError("--weights names one backbone's checkpoint; with several backbones in --backbone, place "
                         "each one's weights where it is looked up (the Hugging Face cache, torchxrayvision's "
                         "folder) or extract that backbone in its own run")
    return names


@app.command()
def texts(
    backbone: str = typer.Option(..., "--backbone", help="Text backbone: a name from `adaptor extract backbones` or "
                                 "hf:<hub id>."),
    dataset: str = DATASET_OPTION,
    cache: Path = CACHE_OPTION,
    weights: Path = WEIGHTS_OPTION,
    tokens: bool = TOKENS_OPTION,
    batch_size: int = BATCH_OPTION,
    device: str = DEVICE_OPTION,
    precision: Precision = PRECISION_OPTION,
    shard_rows: int = SHARD_OPTION,
    scheduler: str = SCHEDULER_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    registry: list[Path] = REGISTRY_OPTION,
    max_length: int = typer.Option(None, "--max-length", min=1, help="Cap the text length in tokens (recorded in the "
                                   "store); an hf: model's own maximum is capped at 112 unless this is given."),
    verbose: bool = VERBOSE_OPTION,
    workers: int = typer.Option(2, "--workers", min=0, help="Tokenisers working ahead of the forward pass: worker "
                                "processes, or threads in each Dask shard task (0: in series with it)."),
) -> None:
    """Embed every study's report (one row per study) with a frozen text backbone."""
    _extract([ExtractionJob(cache, dataset, Modality.TEXT, backbone, weights=weights, tokens=tokens,
                            batch_size=batch_size, num_workers=workers, device=_device(device), precision=precision,
                            shard_rows=shard_rows, registry=tuple(registry), max_length=max_length,
                            verbose=verbose)],
             overwrite, scheduler)


def _extract(jobs: list[ExtractionJob], overwrite: bool, scheduler: str) -> None:
    with input_errors_exit(*RUN_ERRORS):
        summaries = run_multi_extraction(jobs, overwrite=overwrite, scheduler=scheduler)
    for summary in summaries:
        _report(summary, several=len(summaries) > 1)
    job = jobs[0]
    empty = [summary.store for summary in summaries if sum(summary.failures.values()) == summary.rows]
    if empty:
        hint = (f"is the data where {job.cache_dir / job.dataset / 'manifest.json'} says? Use --image-root if the "
                "images moved." if job.modality is Modality.IMAGE else "does this dataset have reports?")
        typer.echo(f"error: no sample of {', '.join(map(str, empty))} could be embedded (reasons above); {hint}",
                   err=True)
        raise typer.Exit(1)


def _report(summary: ExtractionSummary, several: bool) -> None:
    """A store's skipped samples by reason and its final line (headed by the store when a pass wrote several)."""
    if several:
        typer.echo(f"{summary.store}:")
    for reason, count in sorted(summary.failures.items()):
        typer.echo(f"skipped {count:>5}  {reason}")
    typer.echo(summary.final_line())


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@app.command()
def backbones(
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
    registry: list[Path] = REGISTRY_OPTION,
) -> None:
    """List the backbone registry: modality, source, dims, input, weights id, local availability, defining file.

    timm:<model name> and hf:<hub id> backbones need no entry and are not listed.
    """
    with input_errors_exit(SpecError):
        entries = load_registry(registry).entries()
    rows = [
        {
            "name": entry.spec.name,
            "modality": entry.spec.modality.value,
            "source": entry.spec.source.value,
            "dim": entry.spec.dim,
            "input": (f"{entry.spec.image_size}px" if entry.spec.modality is Modality.IMAGE
                      else f"{entry.spec.max_length} tokens"),
            "pooling": entry.spec.pooling.value,
            "weights_id": entry.spec.weights_id,
            "available": weights_available(entry.spec),
            "defined_in": entry.origin,
        }
        for entry in entries
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    columns = list(rows[0])
    cells = [columns] + [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for line in cells:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


_ROOT_HELP = "Dataset folder. " + "; ".join(f"{name.value}: {layout.description}"
                                             for name, layout in LAYOUTS.items()) + "."
"""The --root help, one clause per layout of the dataset registry."""


@app.command("manifest")
def manifest_command(
    dataset: ManifestDataset = typer.Option(..., "--dataset", help="Layout of the dataset tree under --root."),
    root: Path = typer.Option(..., "--root", exists=True, file_okay=False, help=_ROOT_HELP),
    reports: Path = typer.Option(None, "--reports", exists=True, file_okay=False,
                                 help="mimic-cxr: reports folder holding files/pNN/pSUBJECT/sSTUDY.txt, when not "
                                      "unzipped into --root."),
    out: Path = typer.Option(..., "--out",
                             help="Cache folder; the manifest goes to OUT/<dataset>/manifest.csv + .json."),
    views: str = typer.Option(None, "--views", help="mimic-cxr: comma-separated ViewPositions to keep "
                                                    f"[default: {','.join(DEFAULT_VIEWS)}]."),
    merge_val_test: bool = typer.Option(False, "--merge-val-test",
                                        help="mimic-cxr: put the official test split into validate."),
    section_parser: SectionParser = typer.Option(None, "--section-parser",
                                                 help="mimic-cxr: how reports are cut into sections. adaptor "
                                                      "[default]: known headers, IMPRESSION + FINDINGS; mit-lcp: "
                                                      "MIT-LCP's section_parser.py, IMPRESSION + \" \" + FINDINGS "
                                                      "exactly as the paper's code read them."),
    uncertain: ChexpertUncertainPolicy = typer.Option(None, "--uncertain",
                                                      help="chexpert: what an uncertain (-1) label becomes. "
                                                           "competition [default]: the five competition tasks mapped "
                                                           "as GLoRIA/MGCA do (Atelectasis, Edema, Pleural Effusion "
                                                           "1; Cardiomegaly, Consolidation 0), other labels "
                                                           "unscored; ones; zeros; ignore (unscored)."),
    blank: BlankPolicy = typer.Option(None, "--blank",
                                      help="chexpert: what an unmentioned label becomes: negative (0) [default] or "
                                           "ignore (unscored)."),
    val_fraction: float = typer.Option(None, "--val-fraction",
                                       help="Share of patients in the validation split, drawn from the training "
                                            "patients [default: chexpert 0.025, covidx 0.2 unless val.txt exists, "
                                            "rsna and siim 0.15]."),
    test_fraction: float = typer.Option(None, "--test-fraction",
                                        help="rsna, siim: share of patients in the test split [default: 0.15]; "
                                             "chexpert and covidx use their official test lists."),
    seed: int = typer.Option(None, "--seed", help="chexpert, rsna, covidx, siim: seed of the patient-wise split "
                                                  "[default: 0]."),
    train_file: Path = typer.Option(None, "--train-file", help="covidx: the train list, where the folder holds "
                                    "several [default: its one train_COVIDx*.txt or train.txt]."),
    test_file: Path = typer.Option(None, "--test-file", help="covidx: the test list [default: the train list's "
                                   "version of test_COVIDx*.txt, or test.txt]."),
    protocol: str = typer.Option(None, "--protocol", help="rsna, covidx, siim: split as a downstream protocol "
                                 "does (published, corrected or a protocol TOML file); the manifest goes to "
                                 "OUT/<dataset>-<protocol>[-<kind>] and records the protocol, its subsets and "
                                 "the size of its faults."),
    kind: HeadTask = typer.Option(None, "--kind", help="With --protocol: the task (classify or segment) whose "
                                  "split to write, where the protocol splits the dataset differently per task."),
    fractions: str = typer.Option("1,10,100", "--fractions", help="With --protocol: the training percentages "
                                  "whose subsets the protocol draws now (comma-separated)."),
) -> None:
    """Read a dataset tree into a manifest (one row per image) and say what was left out and why."""
    given = {"--reports": reports, "--views": views or None, "--merge-val-test": merge_val_test or None,
             "--section-parser": section_parser,
             "--uncertain": uncertain, "--blank": blank, "--val-fraction": val_fraction,
             "--test-fraction": test_fraction, "--seed": seed, "--train-file": train_file, "--test-file": test_file}
    folder = out / dataset.value
    with input_errors_exit(ValueError):  # a layout error naming the file, or an option that does not fit
        manifest = _read_dataset(dataset, root.resolve(), given)
        if protocol is not None:
            manifest, folder = _split_by_protocol(manifest, dataset, protocol, kind, fractions, given, out)
        elif kind is not None:
            raise ValueError("--kind applies with --protocol only")
    csv_path = write_manifest(manifest, folder)
    for line in _manifest_report(manifest, csv_path):
        typer.echo(line)


def _split_by_protocol(manifest: Manifest, dataset: ManifestDataset, name: str, kind: HeadTask | None,
                       fractions: str, given: Mapping[str, Any], out: Path) -> tuple[Manifest, Path]:
    """The manifest split by the protocol, and its folder; split options are refused (the protocol decides)."""
    split_options = [flag for flag in ("--val-fraction", "--test-fraction", "--seed") if given[flag] is not None]
    if split_options:
        raise ValueError(f"{', '.join(split_options)} cannot be given with --protocol: the protocol decides the split")
    chosen = load_protocol(name)
    kind = kind or protocol_kind(chosen, dataset.value)
    try:
        percentages = tuple(float(part) for part in fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions {fractions!r} is not a comma-separated list of percentages") from None
    split = apply_protocol(manifest, chosen, kind, percentages)
    return split, out / chosen.cache_dataset(dataset.value, kind)


def _read_dataset(dataset: ManifestDataset, root: Path, given: Mapping[str, Any]) -> Manifest:
    """The dataset's reader run with the options given (None: not given), its defaults for the rest."""
    layout = dataset_layout(dataset)
    for flag, value in given.items():
        if value is not None and flag not in layout.options:
            datasets = ", ".join(applicable.value for applicable in layouts_accepting(flag))
            raise ValueError(f"{flag} does not apply to --dataset {dataset.value} (it applies to {datasets})")
    keywords = {layout.options[flag]: _reader_value(flag, value) for flag, value in given.items() if value is not None}
    return layout.read(root, **keywords)


def _reader_value(flag: str, value: Any) -> Any:
    """An option's value as the reader takes it: --views as a list of names, --reports as an absolute path."""
    if flag == "--views":
        return value.split(",")
    if flag == "--reports":
        return value.resolve()
    return value


def _manifest_report(manifest: Manifest, csv_path: Path) -> list[str]:
    lines = [f"wrote {csv_path}: {len(manifest.rows)} images, {len(manifest.studies())} studies"]
    lines += [f"  {split:<9} {count:>7}" for split, count in manifest.split_counts().items()]
    listed = excluded_file(csv_path.parent)
    where = f" (each listed with ids, path and reason in {listed})" if listed else ""
    lines.append(f"excluded {sum(manifest.exclusions.values())} images{where}:")
    lines += [f"  {count:>7}  {reason}" for reason, count in manifest.exclusions.items()]
    positives = {name: sum(row.labels.get(name) == 1.0 for row in manifest.rows) for name in manifest.label_names}
    lines.append("positive labels: " + ", ".join(f"{name} {count}" for name, count in positives.items()))
    if manifest.has_masks:
        lines.append(f"segmentation targets: {sum(bool(row.mask) for row in manifest.rows)} images")
    issues = manifest.report_issue_counts()
    lines.append(f"kept {sum(issues.values())} images whose report is unusable (their text is masked at extraction):")
    lines += [f"  {count:>7}  {issue}" for issue, count in issues.items()]
    return lines


@app.command("demo-data")
def demo_data_command(
    out: Path = typer.Argument(..., help="New or empty folder to write the demo MIMIC-CXR-JPG tree into."),
    subjects: int = typer.Option(60, "--subjects", min=MIN_SUBJECTS, help="Number of patients (2-4 studies each)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
) -> None:
    """Write the bundled synthetic demo dataset in the MIMIC-CXR-JPG 2.0.0 layout, faults included."""
    with input_errors_exit(FileExistsError):
        summary = write_demo_dataset(out, subjects=subjects, seed=seed)
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"next: adaptor extract manifest --dataset mimic-cxr --root {out} --out cache")


@app.command("demo-downstream")
def demo_downstream_command(
    out: Path = typer.Argument(..., help="New or empty folder to write the demo downstream tree into."),
    dataset: DemoTree = typer.Option(DemoTree.SIIM, "--dataset", help="Layout to write: siim (SIIM-ACR "
                                     "Pneumothorax: DICOMs, run-length masks), rsna (RSNA Pneumonia: DICOMs, "
                                     "opacity boxes) or covidx (COVIDx CXR: images, split text files, 3 classes)."),
    images: int = typer.Option(None, "--images", help="Number of images listed [default: "
                               + ", ".join(f"{tree.value} {DEMO_TREES[tree].default_images}" for tree in DemoTree)
                               + "]."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
) -> None:
    """Write a synthetic downstream dataset in a public layout (SIIM-ACR, RSNA Pneumonia or COVIDx), findings
    visible."""
    writer = DEMO_TREES[dataset]
    if images is not None and images < writer.min_images:
        raise typer.BadParameter(f"the {dataset.value} demo needs at least {writer.min_images} images",
                                 param_hint="--images")
    with input_errors_exit(FileExistsError):
        summary = writer(out, images=images, seed=seed)
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"next: adaptor extract manifest --dataset {dataset.value} --root {out} --out cache")
