"""Extraction against its limits: the full pipeline beside the bare forward pass and decode-only.

`python -m bench.extract [--quick] [--backbone NAME] [--images N] [--workers W] [--batch-size B]
[--device cpu|cuda]` writes radiograph-sized grayscale JPEGs and a manifest into a temporary
folder, then measures in interleaved rounds:

- pipeline: `extract.pipeline.extract_shards` into a fresh store (DataLoader workers decode and
  preprocess, the frozen encoder embeds, a writer thread writes whole shards);
- forward: the same encoder on the same batches, already decoded and stacked (pinned on CUDA);
- decode: the pipeline's loader (same dataset, workers, batches, collation), no model.

Pipeline and decode run twice per round, over the first half of the shards and over all of them:
the difference of the two is their steady-state rate, the one a long run sustains, with worker
start-up, the first batches' decode (prefetched while nothing else runs) and the last shard's
write cancelled out. The benchmark then prints pipeline/forward, pipeline/decode, which of the
two bounds the pipeline and how close it gets, and the speed-up of reduced-size JPEG decoding
(Pillow draft) over full decode + resize. The backbone is its registry entry with seeded random
weights: the published architecture and cost, nothing downloaded. The encoder runs in the
precision asked for (`--precision`; auto: bf16 autocast on CUDA, float32 on the CPU), and
channels-last on CUDA, as the pipeline runs it.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import typer
from PIL import Image

from adaptor_vlp.cache_schema import CacheStore, Modality, ShardSpan, dataset_dir
from adaptor_vlp.cache_schema.manifest import (
    CHEXPERT_LABELS,
    Manifest,
    ManifestRow,
    Split,
    read_manifest,
    write_manifest,
)
from adaptor_vlp.extract.backbones import BackboneSpec, get_spec
from adaptor_vlp.extract.demo.anatomy import sample_anatomy
from adaptor_vlp.extract.demo.findings import sample_findings, sample_traits
from adaptor_vlp.extract.demo.radiograph import draw_frontal, encode_jpeg
from adaptor_vlp.extract.encoders import ImageEncoder, load_image_encoder
from adaptor_vlp.extract.images import read_grayscale
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.pipeline import StoreRows, Target, extract_shards, open_store, shard_batches, store_rows
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.sources import Decoders, ImageBatch, ImagePassRows, image_batches
from bench.common import Ratio, best_seconds, describe_machine, timed

DATASET = "bench"
RANDOM_INIT_SEED = 0
DISTINCT_IMAGES = 8
"""Distinct JPEG files; the manifest's rows cycle through them (decode cost does not depend on repeats)."""
DRAW_SIDE = 1024
"""The demo drawing is made at this side, then stretched to the radiograph size and given fine noise."""
PIPELINE_GOAL = 0.9
"""Goal: the pipeline's steady state reaches at least this share of its lower bound (forward or decode)."""
DRAFT_SPEEDUP_GOAL = 4.0
SHARD_BATCHES = 4
"""Default rows per shard = this many batches, so that several shards are written (and overlapped) in a run."""


class Device(str, Enum):
    """Where the backbone runs."""

    CPU = "cpu"
    CUDA = "cuda"


class Bound(str, Enum):
    """What limits the pipeline: the backbone's forward pass or the decoding of images."""

    FORWARD = "forward"
    DECODE = "decode"


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes; `--quick` and the device choose the defaults."""

    backbone: str
    images: int
    workers: int
    batch_size: int
    device: Device
    precision: Precision
    width: int
    height: int
    noise: float
    """Grey-level noise added at full resolution; 3 gives ~1.4 MB files, near MIMIC-CXR-JPG's mean."""
    tokens: bool
    shard_rows: int | None
    """Rows per shard; None: SHARD_BATCHES batches, so that several shards are written and overlapped."""
    rounds: int

    @property
    def rows_per_shard(self) -> int:
        return self.shard_rows or SHARD_BATCHES * self.batch_size

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        return (f"python -m bench.extract{' --quick' if quick else ''} --backbone {self.backbone} "
                f"--images {self.images} --workers {self.workers} --batch-size {self.batch_size} "
                f"--device {self.device.value} --precision {self.precision.value} --width {self.width} "
                f"--height {self.height} --noise {self.noise:g}"
                f"{' --tokens' if self.tokens else ''}{f' --shard-rows {self.shard_rows}' if self.shard_rows else ''} "
                f"--rounds {self.rounds}")


FULL_CPU = Settings("dinov2-s", images=320, workers=2, batch_size=32, device=Device.CPU, precision=Precision.AUTO,
                    width=2544, height=3056, noise=3.0, tokens=False, shard_rows=None, rounds=3)
FULL_CUDA = dataclasses.replace(FULL_CPU, images=4096, workers=max(1, (os.cpu_count() or 2) - 1), batch_size=256,
                                device=Device.CUDA)
QUICK = dataclasses.replace(FULL_CPU, backbone="tiny-vit", images=160, workers=0, batch_size=8, width=640, height=768,
                            rounds=2)


@dataclass(frozen=True)
class ImageSet:
    """The benchmark's JPEGs and the cache folder holding their manifest."""

    cache_dir: Path
    image_root: Path
    files: tuple[Path, ...]

    @property
    def mean_bytes(self) -> float:
        return float(np.mean([path.stat().st_size for path in self.files]))


@dataclass(frozen=True)
class DraftDecode:
    """Reduced-size (Pillow draft) against full JPEG decoding, both ending at the model's input size."""

    size: int
    """Shorter side of the decoded result, in pixels."""
    full_seconds: float
    draft_seconds: float
    mean_abs_difference: float
    """Mean absolute grey-level difference of the two results (0..255): what the speed-up costs."""

    @property
    def speedup(self) -> float:
        return self.full_seconds / self.draft_seconds


@dataclass(frozen=True)
class Rates:
    """Images per second of the three contenders."""

    pipeline: float
    """Steady state: extra rows of the long run over its extra seconds."""
    pipeline_end_to_end: float
    """The long run's rows over its seconds: start-up, fill and the last write included."""
    forward: float
    decode: float
    """Steady state, as the pipeline's."""
    end_to_end: tuple[str, ...] = ()
    """Contenders whose run over all shards was no faster than over half: their end-to-end rate stands in."""

    @property
    def bound(self) -> Bound:
        return Bound.FORWARD if self.forward <= self.decode else Bound.DECODE

    @property
    def bound_rate(self) -> float:
        return min(self.forward, self.decode)

    @property
    def shared_core_ceiling(self) -> float:
        """The ceiling when decode and forward share the same cores (a CPU run): each image costs both."""
        return 1.0 / (1.0 / self.forward + 1.0 / self.decode)


@dataclass(frozen=True)
class ExtractionFigures:
    """The contenders' rates and the draft-decoding comparison."""

    rates: Rates
    decode_cores: int
    draft: DraftDecode

    def ratios(self) -> list[Ratio]:
        rates = self.rates
        return [
            Ratio("pipeline/forward", rates.pipeline / rates.forward),
            Ratio("pipeline/decode", rates.pipeline / rates.decode),
            Ratio(f"pipeline/bound, the {rates.bound.value}", rates.pipeline / rates.bound_rate, goal=PIPELINE_GOAL),
            Ratio("pipeline end to end/forward", rates.pipeline_end_to_end / rates.forward),
            Ratio("JPEG draft decode speed-up", self.draft.speedup, goal=DRAFT_SPEEDUP_GOAL, unit="x"),
        ]

    def lines(self) -> list[str]:
        """The figures as printed: rates, the bound, the ratios, the JPEG comparison."""
        rates, draft = self.rates, self.draft
        caveat = ([f"no steady state for {' and '.join(rates.end_to_end)} (too few images for this machine's noise; "
                   "raise --images or --rounds): end-to-end rates used"] if rates.end_to_end else [])
        return [
            *caveat,
            f"images/s (steady state): pipeline {rates.pipeline:.2f} | backbone forward {rates.forward:.2f} | "
            f"decode + preprocess {rates.decode:.2f} ({rates.decode / self.decode_cores:.1f} per decoding core); "
            f"pipeline end to end {rates.pipeline_end_to_end:.2f}",
            f"bound: {rates.bound.value} at {rates.bound_rate:.2f} images/s (the lower of forward and decode); "
            f"if decode and forward share the cores: 1/(1/forward + 1/decode) = {rates.shared_core_ceiling:.2f}",
            *(ratio.line() for ratio in self.ratios()),
            f"JPEG to {draft.size} px, per image: full decode + resize {draft.full_seconds * 1e3:.1f} ms, "
            f"draft decode + resize {draft.draft_seconds * 1e3:.1f} ms ({1 / draft.draft_seconds:.0f} images/s "
            f"per core); mean |difference| {draft.mean_abs_difference:.2f} grey levels",
        ]


def benchmark_spec(backbone: str) -> BackboneSpec:
    """The registry entry with seeded random weights: the real architecture and cost, no download."""
    spec = get_spec(backbone)
    if spec.modality is not Modality.IMAGE:
        raise typer.BadParameter(f"{backbone!r} is a {spec.modality.value} backbone; pick an image backbone",
                                 param_hint="--backbone")
    return spec if spec.is_random_init else dataclasses.replace(spec, random_init_seed=RANDOM_INIT_SEED)


def write_image_set(folder: Path, images: int, width: int, height: int, noise: float, seed: int = 0) -> ImageSet:
    """`images` manifest rows over up to DISTINCT_IMAGES demo radiographs, as width x height JPEGs."""
    rng = np.random.default_rng(seed)
    image_root = folder / "images"
    image_root.mkdir(parents=True)
    files = []
    for index in range(min(images, DISTINCT_IMAGES)):
        drawing = draw_frontal(sample_findings(rng, sample_traits(rng), portable=False), sample_anatomy(rng), rng,
                               portable=False, side=DRAW_SIDE)
        stretched = np.asarray(Image.fromarray(drawing).resize((width, height), Image.Resampling.BILINEAR))
        noisy = stretched + rng.standard_normal(stretched.shape, dtype=np.float32) * noise
        path = image_root / f"{index:02d}.jpg"
        path.write_bytes(encode_jpeg(np.clip(noisy, 0, 255).astype(np.uint8)))
        files.append(path)
    rows = tuple(
        ManifestRow(
            dicom_id=f"bench-{row:07d}", study_id=f"5{row:07d}", subject_id=f"1{row:07d}", split=Split.TRAIN,
            view="PA", image_path=files[row % len(files)].name, report_text="", report_issue="not used",
            labels={name: None for name in CHEXPERT_LABELS},
        )
        for row in range(images)
    )
    cache_dir = folder / "cache"
    write_manifest(Manifest(DATASET, image_root, image_root, rows), dataset_dir(cache_dir, DATASET))
    return ImageSet(cache_dir, image_root, tuple(files))


def measure_draft_decode(files: tuple[Path, ...], size: int, rounds: int) -> DraftDecode:
    """Decoding each file to shorter side `size`: full decode + resize against the project's draft path."""
    best = best_seconds({
        "full": lambda: timed(lambda: [_full_decode(path, size) for path in files]),
        "draft": lambda: timed(lambda: [read_grayscale(path, size) for path in files]),
    }, rounds)
    difference = np.mean([np.abs(_full_decode(path, size).astype(np.float32) - read_grayscale(path, size)).mean()
                          for path in files])
    return DraftDecode(size, best["full"] / len(files), best["draft"] / len(files), float(difference))


def _full_decode(path: Path, size: int) -> np.ndarray:
    """The baseline without draft: decode every pixel, then one bicubic resize (Pillow, as the project resizes)."""
    with Image.open(path) as image:
        gray = image.convert("L")
    scale = size / min(gray.size)
    target = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    return np.asarray(gray.resize(target, Image.Resampling.BICUBIC))


class ExtractionBenchmark:
    """The three contenders over one image set, sharing one encoder and the same fixed batches."""

    def __init__(self, settings: Settings, image_set: ImageSet) -> None:
        self.settings = settings
        self.image_set = image_set
        self.spec = benchmark_spec(settings.backbone)
        self.encoder: ImageEncoder = load_image_encoder(self.spec, device=settings.device.value,
                                                        precision=settings.precision)
        self.rows: StoreRows = store_rows(read_manifest(dataset_dir(image_set.cache_dir, DATASET)), Modality.IMAGE)
        self.job = ExtractionJob(image_set.cache_dir, DATASET, Modality.IMAGE, settings.backbone,
                                 tokens=settings.tokens, batch_size=settings.batch_size,
                                 num_workers=settings.workers, device=settings.device.value,
                                 precision=settings.precision, shard_rows=settings.rows_per_shard)
        self.spans: list[ShardSpan] = self._fresh_store().shards()
        self.short_spans = self.spans[:len(self.spans) // 2]
        self.batches = [batch.pixels for batch in self._checked([one for (one,) in self._loader(self.spans)])]

    def pipeline_seconds(self, spans: list[ShardSpan]) -> float:
        """Reader -> encoder -> shard buffer -> writer thread -> a fresh store, as `adaptor extract images` runs."""
        store = self._fresh_store()
        seconds = timed(lambda: extract_shards([Target(self.job, self.encoder, store)], self.rows,
                                               self.image_set.image_root, spans))
        if not all(store.valid[span.rows].all() for span in spans):
            raise RuntimeError(f"{store.path}: the pipeline left rows unwritten or failed; its timing is void")
        return seconds

    def forward_seconds(self) -> float:
        """The encoder alone on every pre-decoded batch (host-to-device and output copies included)."""
        return timed(lambda: [self.encoder.encode(pixels, with_tokens=self.settings.tokens) for pixels in self.batches])

    def decode_seconds(self, spans: list[ShardSpan]) -> float:
        """The pipeline's loader alone over the spans' batches: decode, preprocess, collate (and pin), no model."""
        return timed(lambda: list(self._loader(spans)))

    def warm_up(self) -> None:
        """One forward pass at the benchmark's batch size, so that no contender pays first-call set-up."""
        self.encoder.encode(self.batches[0], with_tokens=self.settings.tokens)

    def rates(self, rounds: int) -> Rates:
        """Every contender in interleaved rounds; steady rates from the best short and long runs."""
        best = best_seconds({
            "pipeline short": lambda: self.pipeline_seconds(self.short_spans),
            "pipeline long": lambda: self.pipeline_seconds(self.spans),
            "forward": self.forward_seconds,
            "decode short": lambda: self.decode_seconds(self.short_spans),
            "decode long": lambda: self.decode_seconds(self.spans),
        }, rounds)
        long_rows = _rows(self.spans)
        extra_rows = long_rows - _rows(self.short_spans)
        unsteady = tuple(contender for contender in ("pipeline", "decode")
                         if best[f"{contender} long"] <= best[f"{contender} short"])

        def steady(contender: str) -> float:
            """Extra rows over extra seconds; end to end where noise hid the difference (small runs under load)."""
            if contender in unsteady:
                return long_rows / best[f"{contender} long"]
            return extra_rows / (best[f"{contender} long"] - best[f"{contender} short"])

        return Rates(
            pipeline=steady("pipeline"),
            pipeline_end_to_end=long_rows / best["pipeline long"],
            forward=long_rows / best["forward"],
            decode=steady("decode"),
            end_to_end=unsteady,
        )

    def _fresh_store(self) -> CacheStore:
        return open_store(self.job, self.encoder, dataset_dir(self.image_set.cache_dir, DATASET), self.rows,
                          overwrite=True)

    def _loader(self, spans: list[ShardSpan]) -> Iterator[tuple[ImageBatch]]:
        """The batches `extract.pipeline` decodes in one process: DataLoader worker processes."""
        dataset = ImagePassRows(self.rows.manifest_rows, self.image_set.image_root, [self.spec], views=0,
                                decode=self.job.decode)
        return image_batches(dataset, shard_batches(spans, self.settings.batch_size), self.settings.workers,
                             Decoders.PROCESSES, pin_memory=self.settings.device is Device.CUDA)

    @staticmethod
    def _checked(batches: list[ImageBatch]) -> list[ImageBatch]:
        failures = [reason for batch in batches for reason in batch.failures.values()]
        if failures:
            raise RuntimeError(f"{len(failures)} benchmark images did not decode, e.g. {failures[0]}")
        return batches


def _rows(spans: list[ShardSpan]) -> int:
    return sum(span.stop - span.start for span in spans)


def run_benchmark(settings: Settings) -> tuple[list[str], ExtractionFigures]:
    """Builds the image set in a temporary folder and runs the contenders; returns the set-up lines and figures."""
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as folder:
        image_set = write_image_set(Path(folder), settings.images, settings.width, settings.height, settings.noise)
        benchmark = ExtractionBenchmark(settings, image_set)
        benchmark.warm_up()
        rates = benchmark.rates(settings.rounds)
        draft = measure_draft_decode(image_set.files, benchmark.spec.image_size, max(settings.rounds, 3))
        parameters = sum(p.numel() for p in benchmark.encoder.model.parameters())
        setup = [
            f"images: {settings.images} manifest rows over {len(image_set.files)} distinct {settings.width}x"
            f"{settings.height} grayscale JPEGs (mean {image_set.mean_bytes / 1e6:.2f} MB), read from the page cache",
            f"backbone: {settings.backbone} ({benchmark.spec.weights_id}, {parameters / 1e6:.1f} M parameters, "
            f"{benchmark.spec.image_size} px, {benchmark.encoder.precision.value} forward)"
            f"{', with patch tokens' if settings.tokens else ''}; batch "
            f"{settings.batch_size}, {settings.workers} decode workers, {benchmark.job.shard_rows}-row shards; "
            f"runs over {_rows(benchmark.short_spans)} and {settings.images} rows, best of {settings.rounds} "
            "interleaved round(s)",
        ]
    decode_cores = max(1, min(settings.workers, os.cpu_count() or 1))
    return setup, ExtractionFigures(rates, decode_cores, draft)


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (tiny-vit, small JPEGs): a smoke run of seconds."),
    backbone: str | None = typer.Option(None, "--backbone", help="Image backbone from the registry, built with "
                                        "random weights [default: dinov2-s; tiny-vit with --quick]."),
    images: int | None = typer.Option(None, "--images", min=2, help="Manifest rows extracted per round "
                                      "[default: 320 on cpu, 4096 on cuda]."),
    workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader worker processes decoding JPEGs "
                                       "[default: 2 on cpu, cores - 1 on cuda]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per forward pass "
                                          "[default: 32 on cpu, 256 on cuda]."),
    device: Device = typer.Option(Device.CPU, "--device", help="Where the backbone runs."),
    precision: Precision = typer.Option(Precision.AUTO, "--precision", help="Forward-pass arithmetic, as "
                                        "`adaptor extract images --precision` (auto: bfloat16 on CUDA, else float32)."),
    width: int | None = typer.Option(None, "--width", min=16, help="JPEG width in pixels [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="JPEG height in pixels [default: 3056]."),
    noise: float | None = typer.Option(None, "--noise", min=0.0, help="Grey-level noise in the JPEGs: more noise, "
                                       "more bytes to entropy-decode [default: 3]."),
    tokens: bool = typer.Option(False, "--tokens", help="Also embed and store the patch tokens."),
    shard_rows: int | None = typer.Option(None, "--shard-rows", min=1, help="Rows per shard [default: 4 batches]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds; each contender's best "
                                      "counts [default: 3]."),
) -> None:
    """Extraction pipeline throughput against the bare forward pass and decode-only, side by side."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    defaults = QUICK if quick else FULL_CUDA if device is Device.CUDA else FULL_CPU
    chosen = {"backbone": backbone, "images": images, "workers": workers, "batch_size": batch_size, "width": width,
              "height": height, "noise": noise, "shard_rows": shard_rows, "rounds": rounds}
    settings = dataclasses.replace(defaults, device=device, precision=precision, tokens=tokens,
                                   **{name: value for name, value in chosen.items() if value is not None})
    if settings.images < 2 * settings.rows_per_shard:
        raise typer.BadParameter(f"{settings.images} images fill fewer than two shards of {settings.rows_per_shard} "
                                 "rows; the steady state is measured between runs over half the shards and over "
                                 "all of them", param_hint="--images")
    typer.echo("bench.extract: the extraction pipeline against the bare forward pass and decode-only")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine(settings.device.value).line())
    setup, figures = run_benchmark(settings)
    for line in setup + figures.lines():
        typer.echo(line)
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
