"""Several image backbones in one pass against one pass per backbone, side by side.

`python -m bench.multi_extract [--quick] [--backbones a,b,c] [--images N] [--workers W]
[--batch-size B] [--device cpu|cuda] [--precision P] [--rounds R] [--threads T]` writes radiograph-sized
grayscale JPEGs and a manifest (as `bench.extract` does) and measures in interleaved rounds:

- one pass: `extract.pipeline.extract_shards` with every backbone as a target, into fresh stores:
  each image decoded once, at the pass's decode size, and preprocessed for every backbone;
- one single pass per backbone, each at its own default decode size (what one
  `adaptor extract images` per backbone does);
- the readers alone (the pass's and each single pass's: decode + preprocess, no model);
- each backbone's forward pass alone, on already decoded batches.

Passes and readers run over the first half of the shards and over all of them; their steady rate
is the extra rows over the extra seconds (start-up, prefetch and the last write cancel out). The
benchmark prints the speed-up of the one pass over the single passes together, what each sits
at (decode or forward) and the speed-up its parts predict. The default backbones are tiny
(forward passes of well under a millisecond per image), so decoding bounds the single passes:
the regime of a GPU node. `--backbones dinov2-s,dinov2-b,resnet-ae` runs the paper's three at
their published cost with seeded random weights. On CUDA the forward passes run in the
precision asked for (auto: bf16) and channels-last, as the pipeline runs them.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import typer

from adaptor_vlp.cache_schema import Modality, ShardSpan, dataset_dir
from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.extract.backbones import UnknownBackbone
from adaptor_vlp.extract.encoders import ImageEncoder, load_image_encoder
from adaptor_vlp.extract.job import ExtractionJob, ExtractionPass
from adaptor_vlp.extract.pipeline import StoreRows, Target, extract_shards, open_store, shard_batches, store_rows
from adaptor_vlp.extract.precision import Precision
from adaptor_vlp.extract.sources import Decoders, ImageBatch, ImagePassRows, image_batches
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import DATASET, Bound, Device, ImageSet, benchmark_spec, write_image_set

TINY_BACKBONES = ("tiny-vit", "tiny-resnet", "timm:test_vit.r160_in1k")
"""Three tiny backbones with inputs of 64, 64 and 160 px: the pass decodes at the largest first resize (168)."""
PAPER_BACKBONES = ("dinov2-s", "dinov2-b", "resnet-ae")
SPEEDUP_GOAL = 2.5
"""Goal: where decoding bounds the single passes, one pass over three backbones is at least this much faster."""
SHARD_BATCHES = 4
"""Rows per shard = this many batches, so that several shards are written (and overlapped) in a run."""


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes; `--quick` and the device choose the defaults."""

    backbones: tuple[str, ...]
    images: int
    workers: int
    batch_size: int
    device: Device
    precision: Precision
    width: int
    height: int
    noise: float
    rounds: int
    threads: int | None = None
    """torch's intra-op threads for the forward passes; None: torch's default (one per core)."""

    @property
    def rows_per_shard(self) -> int:
        return SHARD_BATCHES * self.batch_size

    @property
    def shared_cores(self) -> bool:
        """True when the decoders and the forward passes compete for the same CPU cores."""
        if self.device is Device.CUDA:
            return False
        cores = os.cpu_count() or 1
        return self.workers + (self.threads or cores) > cores

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        return (f"python -m bench.multi_extract{' --quick' if quick else ''} --backbones {','.join(self.backbones)} "
                f"--images {self.images} --workers {self.workers} --batch-size {self.batch_size} "
                f"--device {self.device.value} --precision {self.precision.value} --width {self.width} "
                f"--height {self.height} --noise {self.noise:g} --rounds {self.rounds}"
                f"{f' --threads {self.threads}' if self.threads else ''}")


FULL_CPU = Settings(TINY_BACKBONES, images=320, workers=2, batch_size=32, device=Device.CPU, precision=Precision.AUTO,
                    width=2544, height=3056, noise=3.0, rounds=3)
FULL_CUDA = dataclasses.replace(FULL_CPU, images=2048, workers=max(1, (os.cpu_count() or 2) - 1), batch_size=128,
                                device=Device.CUDA, rounds=2)
QUICK = dataclasses.replace(FULL_CPU, images=32, workers=0, batch_size=4, width=640, height=768, rounds=1)


@dataclass(frozen=True)
class ReaderFigures:
    """One way of filling stores (the one pass, or one backbone's single pass): its rates and what bounds it."""

    name: str
    decode_size: str
    rate: float
    """Steady images/s of the whole pass: reader, forward passes, buffers and writers."""
    decode: float
    """Steady images/s of its reader alone: decode once, preprocess for each of its backbones."""
    forward: float
    """Images/s of its backbones' forward passes one after the other: 1 / sum(1 / each)."""
    shared_cores: bool

    @property
    def bound(self) -> Bound:
        return Bound.FORWARD if self.forward <= self.decode else Bound.DECODE

    @property
    def ceiling(self) -> float:
        """The best rate its parts allow: 1/(1/decode + 1/forward) on shared CPU cores, else the slower part
        (decoders and forward passes on separate cores, or a GPU)."""
        if self.shared_cores:
            return 1.0 / (1.0 / self.decode + 1.0 / self.forward)
        return min(self.decode, self.forward)

    def line(self) -> str:
        return (f"{self.name} (decode at {self.decode_size}): {self.rate:.2f} images/s steady | reader alone "
                f"{self.decode:.2f} | forward passes {self.forward:.2f} | bound: {self.bound.value} | "
                f"ceiling {self.ceiling:.2f} ({self.rate / self.ceiling:.2f} of it)")


@dataclass(frozen=True)
class MultiFigures:
    """The one pass and the single passes, over the same rows."""

    one_pass: ReaderFigures
    singles: tuple[ReaderFigures, ...]
    end_to_end: tuple[str, ...] = ()
    """Contenders whose rate is end to end: over all shards no slower than over half (too few images)."""

    @property
    def singles_rate(self) -> float:
        """Images/s of the single passes run one after the other (each image through every backbone)."""
        return 1.0 / sum(1.0 / single.rate for single in self.singles)

    @property
    def predicted_speedup(self) -> float:
        """What the parts predict: the single passes' ceilings in series against the one pass's ceiling."""
        return self.one_pass.ceiling * sum(1.0 / single.ceiling for single in self.singles)

    @property
    def decode_bound(self) -> bool:
        return all(single.bound is Bound.DECODE for single in self.singles)

    def ratios(self) -> list[Ratio]:
        count = len(self.singles)
        goal = SPEEDUP_GOAL if self.decode_bound and count == 3 else None
        return [
            Ratio(f"one pass/{count} single passes", self.one_pass.rate / self.singles_rate, goal=goal, unit="x"),
            Ratio("one pass/its ceiling", self.one_pass.rate / self.one_pass.ceiling),
            Ratio("reader of one pass/readers of the single passes",
                  self.one_pass.decode * sum(1.0 / single.decode for single in self.singles), unit="x"),
        ]

    def lines(self) -> list[str]:
        figures = [self.one_pass.line(), *(single.line() for single in self.singles)]
        regime = ("every single pass is decode-bound: the regime the goal is for" if self.decode_bound else
                  "forward-bound: one pass saves only decoding, which is not what bounds these backbones here; "
                  "no goal applies")
        caveat = ([f"no steady state at these sizes for {', '.join(self.end_to_end)}: end-to-end rates used"]
                  if self.end_to_end else [])
        return [
            *figures,
            *caveat,
            f"single passes in series: {self.singles_rate:.2f} images/s; {regime}",
            *(ratio.line() for ratio in self.ratios()),
            f"speed-up the parts predict (ceilings): {self.predicted_speedup:.2f}x",
        ]


class MultiBenchmark:
    """The one pass, the single passes, their readers and the forward passes, over one image set and one shard plan."""

    def __init__(self, settings: Settings, image_set: ImageSet) -> None:
        self.settings = settings
        self.image_root = image_set.image_root
        self.manifest_folder = dataset_dir(image_set.cache_dir, DATASET)
        self.rows: StoreRows = store_rows(read_manifest(self.manifest_folder), Modality.IMAGE)
        jobs = [ExtractionJob(image_set.cache_dir, DATASET, Modality.IMAGE, name, batch_size=settings.batch_size,
                              num_workers=settings.workers, device=settings.device.value,
                              precision=settings.precision, shard_rows=settings.rows_per_shard)
                for name in settings.backbones]
        self.one_pass = ExtractionPass.of(jobs)
        self.singles = [ExtractionPass.of([job]) for job in jobs]
        self.encoders: dict[str, ImageEncoder] = {
            name: load_image_encoder(benchmark_spec(name), device=settings.device.value, precision=settings.precision)
            for name in settings.backbones}
        self.spans: list[ShardSpan] = self._fresh_targets(self.one_pass)[0].store.shards()
        self.short_spans = self.spans[:len(self.spans) // 2]
        decoded = list(self._reader(self.one_pass, self.spans))
        failures = [reason for batches in decoded for reason in batches[0].failures.values()]
        if failures:
            raise RuntimeError(f"{len(failures)} benchmark images did not decode, e.g. {failures[0]}")
        self.pixels = {name: [batches[position].pixels for batches in decoded]
                       for position, name in enumerate(settings.backbones)}

    def fill_seconds(self, extraction: ExtractionPass, spans: list[ShardSpan]) -> float:
        """One pass over the spans into fresh stores, as `adaptor extract images --backbone ...` runs in one process."""
        targets = self._fresh_targets(extraction)
        seconds = timed(lambda: extract_shards(targets, self.rows, self.image_root, spans))
        if not all(target.store.valid[span.rows].all() for target in targets for span in spans):
            raise RuntimeError("a pass left rows unwritten or failed; its timing is void")
        return seconds

    def reader_seconds(self, extraction: ExtractionPass, spans: list[ShardSpan]) -> float:
        """The pass's reader alone over the spans' batches: decode, preprocess for each backbone, collate."""
        return timed(lambda: list(self._reader(extraction, spans)))

    def forward_seconds(self, name: str) -> float:
        """One backbone's forward pass alone on every pre-decoded batch."""
        encoder = self.encoders[name]
        return timed(lambda: [encoder.encode(pixels) for pixels in self.pixels[name]])

    def warm_up(self) -> None:
        """One forward pass per backbone at the benchmark's batch size, so no contender pays first-call set-up."""
        for name, encoder in self.encoders.items():
            encoder.encode(self.pixels[name][0])

    def figures(self, rounds: int) -> MultiFigures:
        """Every contender in interleaved rounds; steady rates from the best short and long runs."""
        readers = {"one pass": self.one_pass, **{f"single {e.settings.backbone}": e for e in self.singles}}
        contenders = {}
        for name, extraction in readers.items():
            for length, spans in (("short", self.short_spans), ("long", self.spans)):
                contenders[f"{name} {length}"] = lambda e=extraction, s=spans: self.fill_seconds(e, s)
                contenders[f"{name} reader {length}"] = lambda e=extraction, s=spans: self.reader_seconds(e, s)
        for name in self.settings.backbones:
            contenders[f"forward {name}"] = lambda n=name: self.forward_seconds(n)
        best = best_seconds(contenders, rounds)
        rows = sum(span.stop - span.start for span in self.spans)
        extra_rows = rows - sum(span.stop - span.start for span in self.short_spans)

        unsteady: list[str] = []

        def steady(contender: str) -> float:
            """Extra rows over extra seconds; end to end where noise hid the difference (--quick sizes)."""
            gained = best[f"{contender} long"] - best[f"{contender} short"]
            if gained > 0:
                return extra_rows / gained
            unsteady.append(contender)
            return rows / best[f"{contender} long"]

        forward = {name: rows / best[f"forward {name}"] for name in self.settings.backbones}
        shared_cores = self.settings.shared_cores

        def reader(name: str, extraction: ExtractionPass) -> ReaderFigures:
            serial_forward = 1.0 / sum(1.0 / forward[job.backbone] for job in extraction.jobs)
            return ReaderFigures(name, str(extraction.decode), steady(name), steady(f"{name} reader"),
                                 serial_forward, shared_cores)

        figures = [reader(name, extraction) for name, extraction in readers.items()]
        return MultiFigures(figures[0], tuple(figures[1:]), tuple(unsteady))

    def _fresh_targets(self, extraction: ExtractionPass) -> list[Target]:
        return [Target(job, self.encoders[job.backbone],
                       open_store(job, self.encoders[job.backbone], self.manifest_folder, self.rows, overwrite=True))
                for job in extraction.jobs]

    def _reader(self, extraction: ExtractionPass, spans: list[ShardSpan]) -> Iterator[tuple[ImageBatch, ...]]:
        """The batches `extract.pipeline` reads for a pass in one process: DataLoader worker processes."""
        dataset = ImagePassRows(self.rows.manifest_rows, self.image_root,
                                [self.encoders[job.backbone].spec for job in extraction.jobs], views=0,
                                decode=extraction.decode)
        return image_batches(dataset, shard_batches(spans, self.settings.batch_size), self.settings.workers,
                             Decoders.PROCESSES, pin_memory=self.settings.device is Device.CUDA)


def run_benchmark(settings: Settings) -> tuple[list[str], MultiFigures]:
    """Builds the image set in a temporary folder and runs the contenders; returns the set-up lines and figures."""
    with tempfile.TemporaryDirectory(prefix="bench-multi-extract-") as folder:
        image_set = write_image_set(Path(folder), settings.images, settings.width, settings.height, settings.noise)
        benchmark = MultiBenchmark(settings, image_set)
        benchmark.warm_up()
        figures = benchmark.figures(settings.rounds)
        described = ", ".join(
            f"{name} ({sum(p.numel() for p in encoder.model.parameters()) / 1e6:.2f} M parameters, "
            f"{encoder.spec.image_size} px, {encoder.precision.value})"
            for name, encoder in benchmark.encoders.items())
        setup = [
            f"images: {settings.images} manifest rows over {len(image_set.files)} distinct {settings.width}x"
            f"{settings.height} grayscale JPEGs (mean {image_set.mean_bytes / 1e6:.2f} MB), read from the page cache",
            f"backbones (seeded random weights): {described}; batch {settings.batch_size}, {settings.workers} "
            f"decode workers, {torch.get_num_threads()} forward threads "
            f"({'sharing' if settings.shared_cores else 'not sharing'} cores with the decoders), "
            f"{settings.rows_per_shard}-row shards; runs over "
            f"{sum(s.stop - s.start for s in benchmark.short_spans)} and {settings.images} rows, best of "
            f"{settings.rounds} interleaved round(s)",
        ]
    return setup, figures


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (small JPEGs, few rows): a smoke run of seconds."),
    backbones: str | None = typer.Option(None, "--backbones", help="Comma-separated image backbones, built with "
                                         f"random weights [default: {','.join(TINY_BACKBONES)}; the paper's: "
                                         f"{','.join(PAPER_BACKBONES)}]."),
    images: int | None = typer.Option(None, "--images", min=2, help="Manifest rows per pass "
                                      "[default: 320 on cpu, 2048 on cuda]."),
    workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader worker processes decoding JPEGs "
                                       "[default: 2 on cpu, cores - 1 on cuda]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per forward pass "
                                          "[default: 32 on cpu, 128 on cuda]; shards hold 4 batches."),
    device: Device = typer.Option(Device.CPU, "--device", help="Where the backbones run."),
    precision: Precision = typer.Option(Precision.AUTO, "--precision", help="Forward-pass arithmetic "
                                        "(auto: bfloat16 on CUDA, else float32)."),
    width: int | None = typer.Option(None, "--width", min=16, help="JPEG width in pixels [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="JPEG height in pixels [default: 3056]."),
    noise: float | None = typer.Option(None, "--noise", min=0.0, help="Grey-level noise in the JPEGs "
                                       "[default: 3, ~1.4 MB files]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds; each contender's best "
                                      "counts [default: 3 on cpu, 2 on cuda]."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads for the forward passes; "
                                       "with --workers, at most the cores: decoders and forward passes on separate "
                                       "cores, as on a GPU node [default: torch's, one per core]."),
) -> None:
    """One pass over several image backbones against one pass per backbone, side by side."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    defaults = QUICK if quick else FULL_CUDA if device is Device.CUDA else FULL_CPU
    chosen = {"images": images, "workers": workers, "batch_size": batch_size, "width": width, "height": height,
              "noise": noise, "rounds": rounds, "threads": threads}
    names = tuple(name.strip() for name in backbones.split(",")) if backbones else defaults.backbones
    settings = dataclasses.replace(defaults, backbones=names, device=device, precision=precision,
                                   **{name: value for name, value in chosen.items() if value is not None})
    if settings.images < 2 * settings.rows_per_shard:
        raise typer.BadParameter(f"{settings.images} images fill fewer than two shards of {settings.rows_per_shard} "
                                 "rows; the steady state is measured between runs over half the shards and over "
                                 "all of them", param_hint="--images")
    for name in names:  # an unknown or text backbone is refused before any image is drawn
        try:
            benchmark_spec(name)
        except UnknownBackbone as error:
            raise typer.BadParameter(str(error), param_hint="--backbones") from None
    if settings.threads:
        torch.set_num_threads(settings.threads)
    typer.echo("bench.multi_extract: several image backbones in one pass against one pass per backbone")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine(settings.device.value).line())
    setup, figures = run_benchmark(settings)
    for line in setup + figures.lines():
        typer.echo(line)
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
