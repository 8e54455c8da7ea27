"""Extraction in Dask shard tasks against the same extraction in one process, where decoding bounds both.

`python -m bench.dask_extract [--quick] [--images N] [--decoders W] [--rounds R]` writes
radiograph-sized JPEGs (as `bench.extract` does) with two manifests over them, all the rows and
the first half, and runs `extract.run.run_extraction`, the path `adaptor extract images` takes,
as three contenders in interleaved rounds:

- one process: `--scheduler none --workers W`, W DataLoader worker processes decoding;
- Dask with decoder threads: `--scheduler tcp://...` on a running one-worker local cluster with
  `--workers W`, each shard task decoding with W threads (a Dask worker is daemonic and may not
  start processes);
- Dask without decoders: the same with `--workers 0`, each shard task decoding in its own
  thread, which is what every shard task did before the decoder threads.

The backbone is `tiny-vit`, whose forward pass costs a fraction of a millisecond per image, so
decoding bounds every contender and the comparison is between ways of decoding. Each contender
extracts both manifests; its steady rate is the extra rows over the extra seconds, which cancels
the model loads and the last shard's write. The cluster starts once, outside the timings, as a
researcher's cluster would already be running.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from adaptor_vlp.cache_schema import Modality, dataset_dir
from adaptor_vlp.cache_schema.cluster import local_cluster
from adaptor_vlp.cache_schema.manifest import read_manifest, write_manifest
from adaptor_vlp.extract.job import ExtractionJob
from adaptor_vlp.extract.run import run_extraction
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import DATASET, write_image_set

BACKBONE = "tiny-vit"
DASK_WORKERS = 1
"""One Dask worker process, so that it and the one-process run have the same cores to decode on."""
HALF_DATASET = f"{DATASET}-half"
DASK_GOAL = 0.9
"""Goal: Dask shard tasks decode at least this share of one process's rate with the same decoder count."""


@dataclass(frozen=True)
class Contender:
    """One way of running the extraction: in this process or in Dask shard tasks, with this many decoders."""

    name: str
    on_dask: bool
    decoders: int

    @property
    def options(self) -> str:
        """The `adaptor extract images` options that run it."""
        where = "tcp://... (a running 1-worker cluster)" if self.on_dask else "none"
        return f"--scheduler {where} --workers {self.decoders}"


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes; `--quick` chooses small ones."""

    images: int
    decoders: int
    batch_size: int
    shard_rows: int
    width: int
    height: int
    rounds: int

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        return (f"python -m bench.dask_extract{' --quick' if quick else ''} --images {self.images} "
                f"--decoders {self.decoders} --batch-size {self.batch_size} --shard-rows {self.shard_rows} "
                f"--width {self.width} --height {self.height} --rounds {self.rounds}")

    def contenders(self) -> tuple[Contender, Contender, Contender]:
        """One process, Dask with decoder threads, Dask without decoders."""
        return (Contender("one process", on_dask=False, decoders=self.decoders),
                Contender("dask, decoder threads", on_dask=True, decoders=self.decoders),
                Contender("dask, no decoders", on_dask=True, decoders=0))


FULL = Settings(images=1280, decoders=2, batch_size=32, shard_rows=128, width=2544, height=3056, rounds=2)
QUICK = Settings(images=64, decoders=2, batch_size=8, shard_rows=16, width=640, height=768, rounds=1)


@dataclass(frozen=True)
class ContenderRates:
    """A contender's images per second: steady state (None where noise hid it) and end to end over all rows."""

    steady: float | None
    end_to_end: float


def extraction_seconds(cache_dir: Path, dataset: str, settings: Settings, contender: Contender,
                       scheduler: str) -> float:
    """One whole `adaptor extract images` run into a fresh store, as the contender runs it."""
    job = ExtractionJob(cache_dir, dataset, Modality.IMAGE, BACKBONE, batch_size=settings.batch_size,
                        num_workers=contender.decoders, device="cpu", shard_rows=settings.shard_rows)
    quiet = Console(file=io.StringIO())

    def run() -> None:
        summary = run_extraction(job, overwrite=True, scheduler=scheduler, console=quiet)
        if summary.failures or summary.rows_done != summary.rows:
            raise RuntimeError(f"{summary.store}: the {contender.name} run left rows unwritten or failed; "
                               "its timing is void")

    return timed(run)


def measure(settings: Settings, folder: Path) -> dict[str, ContenderRates]:
    """Every contender over both manifests in interleaved rounds, the Dask ones on one running cluster."""
    image_set = write_image_set(folder, settings.images, settings.width, settings.height, noise=3.0)
    manifest = read_manifest(dataset_dir(image_set.cache_dir, DATASET))
    half = settings.images // 2
    write_manifest(dataclasses.replace(manifest, dataset=HALF_DATASET, rows=manifest.rows[:half]),
                   dataset_dir(image_set.cache_dir, HALF_DATASET))
    with local_cluster(DASK_WORKERS) as cluster:
        runs = {
            f"{contender.name} {dataset}": functools.partial(
                extraction_seconds, image_set.cache_dir, dataset, settings, contender,
                cluster.scheduler_address if contender.on_dask else "none")
            for contender in settings.contenders() for dataset in (HALF_DATASET, DATASET)
        }
        best = best_seconds(runs, settings.rounds)
    rates = {}
    for contender in settings.contenders():
        short, long = best[f"{contender.name} {HALF_DATASET}"], best[f"{contender.name} {DATASET}"]
        steady = (settings.images - half) / (long - short) if long > short else None
        rates[contender.name] = ContenderRates(steady, settings.images / long)
    return rates


def ratios(rates: dict[str, ContenderRates], settings: Settings) -> tuple[str, list[Ratio]]:
    """Dask with decoder threads against one process and against Dask without decoders, and which rates they use.

    Steady rates where every contender has one; at sizes where noise hides a steady state
    (`--quick`), end-to-end rates.
    """
    contenders = [rates[c.name] for c in settings.contenders()]
    steady = all(rate.steady is not None for rate in contenders)
    one_process, threads, single = (rate.steady if steady else rate.end_to_end for rate in contenders)
    kind = "steady" if steady else "end-to-end (no steady state at these sizes)"
    return kind, [Ratio("dask decoder threads/one process", threads / one_process, goal=DASK_GOAL),
                  Ratio("dask decoder threads/dask no decoders", threads / single, unit="x")]


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (small JPEGs, few rows): a smoke run."),
    images: int | None = typer.Option(None, "--images", min=4, help="Rows of the full manifest [default: 1280]."),
    decoders: int | None = typer.Option(None, "--decoders", min=1, help="Decoders per run: processes in one "
                                        "process, threads in a Dask task [default: 2]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per batch [default: 32]."),
    shard_rows: int | None = typer.Option(None, "--shard-rows", min=1, help="Rows per shard, the Dask task "
                                          "[default: 128]."),
    width: int | None = typer.Option(None, "--width", min=16, help="JPEG width in pixels [default: 2544]."),
    height: int | None = typer.Option(None, "--height", min=16, help="JPEG height in pixels [default: 3056]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds; each contender's best "
                                      "counts [default: 2]."),
) -> None:
    """Dask shard tasks against one process, decode-bound, side by side."""
    chosen = {"images": images, "decoders": decoders, "batch_size": batch_size, "shard_rows": shard_rows,
              "width": width, "height": height, "rounds": rounds}
    settings = dataclasses.replace(QUICK if quick else FULL,
                                   **{name: value for name, value in chosen.items() if value is not None})
    if settings.images // 2 < 2 * settings.shard_rows:
        raise typer.BadParameter(f"half of {settings.images} images fills fewer than two shards of "
                                 f"{settings.shard_rows} rows; raise --images or lower --shard-rows",
                                 param_hint="--images")
    typer.echo("bench.dask_extract: extraction in Dask shard tasks against one process, decode-bound")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine("cpu").line())
    typer.echo(f"images: {settings.images} and {settings.images // 2} rows over {settings.width}x{settings.height} "
               f"grayscale JPEGs; backbone {BACKBONE}; batch {settings.batch_size}, {settings.shard_rows}-row shards; "
               f"best of {settings.rounds} interleaved round(s)")
    with tempfile.TemporaryDirectory(prefix="bench-dask-extract-") as folder:
        rates = measure(settings, Path(folder))
    for contender in settings.contenders():
        rate = rates[contender.name]
        steady = "no steady state" if rate.steady is None else f"{rate.steady:.1f} images/s steady"
        typer.echo(f"{contender.name} ({contender.options}): {steady}, {rate.end_to_end:.1f} end to end")
    kind, measured = ratios(rates, settings)
    typer.echo(f"ratios of {kind} rates:")
    for ratio in measured:
        typer.echo(ratio.line())
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
