"""Reports tokenised in the reader's worker processes against in series on the thread that feeds the forward pass.

`python -m bench.report_tokens [--quick] [--workers N] [--batch-size B] [--rounds R] [--reports N]`
tokenises the 3,955 real Indiana University reports that torchxrayvision ships (`NLMCXR_reports.tgz`,
IMPRESSION + FINDINGS of each, the non-empty ones) with MiniLM's tokenizer (a fast BERT WordPiece
tokenizer, as the paper's BERT-family backbones use), padded and truncated to 112 tokens, in the
extract stage's fixed batches (`extract.sources.ReportRows` + `read_ahead`):

- in series: the feeding thread tokenises each batch itself before the forward pass (0 workers,
  what text extraction did before);
- in `--workers` worker processes: the batches arrive tokenised, and the feeding thread only receives them.

For each it prints the texts/s delivered to the feeding thread and that thread's own CPU time per
text (`time.thread_time`), which is what the forward pass no longer waits for. No forward pass
runs: on a GPU node it overlaps with the tokenisers, which is the point.
"""
from __future__ import annotations

import dataclasses
import os
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import torch
import typer
from transformers import AutoTokenizer

from adaptor_vlp.cache_schema.manifest import ManifestRow, Split
from adaptor_vlp.extract.backbones import MINILM_NAME, get_spec
from adaptor_vlp.extract.encoders import ReportTokenizer
from adaptor_vlp.extract.sources import Decoders, ReportRows, read_ahead
from adaptor_vlp.extract.weights import locate_weights
from bench.common import Ratio, best_seconds, describe_machine

SECTIONS = ("IMPRESSION", "FINDINGS")
"""The paper's text: IMPRESSION + FINDINGS (`extract.report_sections`)."""
MAX_LENGTH = 112


def iu_reports_archive() -> Path:
    """torchxrayvision's copy of the Indiana University reports (NLMCXR_reports.tgz)."""
    import torchxrayvision  # deferred: it imports pandas and scikit-image (seconds)

    return Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"


def read_iu_reports(archive: Path) -> list[str]:
    """IMPRESSION + FINDINGS of each report in the archive, whitespace collapsed; reports with neither left out."""
    texts = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            root = ElementTree.parse(tar.extractfile(member)).getroot()
            sections = {node.get("Label"): (node.text or "").strip() for node in root.iter("AbstractText")}
            text = " ".join(" ".join(sections.get(label, "") for label in SECTIONS).split())
            if text:
                texts.append(text)
    return texts


def study_rows(texts: list[str]) -> list[ManifestRow]:
    return [ManifestRow(dicom_id=f"iu-{k}", study_id=f"iu-{k}", subject_id=f"iu-{k}", split=Split.TRAIN, view="PA",
                        image_path="", report_text=text, report_issue="", labels={}) for k, text in enumerate(texts)]


@dataclass(frozen=True)
class Feed:
    """What the feeding thread saw: wall seconds for every batch, and its own CPU seconds."""

    seconds: float
    thread_seconds: float


def feed(reports: ReportRows, batch_size: int, workers: int) -> Feed:
    """Every batch delivered to this thread, tokenised by `workers` processes (0: by this thread)."""
    batches = [list(range(start, min(start + batch_size, len(reports))))
               for start in range(0, len(reports), batch_size)]
    started, thread_started = time.perf_counter(), time.thread_time()
    delivered = 0
    for batch in read_ahead(reports, batches, workers, Decoders.PROCESSES, pin_memory=False):
        delivered += len(batch.rows)
    if delivered != len(reports):
        raise RuntimeError(f"{delivered} of {len(reports)} reports delivered")
    return Feed(time.perf_counter() - started, time.thread_time() - thread_started)


@dataclass(frozen=True)
class Settings:
    workers: int
    batch_size: int
    rounds: int
    reports: int | None

    def command(self, quick: bool) -> str:
        limit = "" if self.reports is None else f" --reports {self.reports}"
        return (f"python -m bench.report_tokens{' --quick' if quick else ''} --workers {self.workers} "
                f"--batch-size {self.batch_size} --rounds {self.rounds}{limit}")


FULL = Settings(workers=2, batch_size=256, rounds=3, reports=None)
QUICK = dataclasses.replace(FULL, batch_size=32, rounds=1, reports=128)

app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="128 reports, batches of 32, one round: a smoke run."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Tokenising worker processes [default: 2]."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Reports per batch [default: 256]."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds [default: 3]."),
    reports: int | None = typer.Option(None, "--reports", min=1, help="Use the first N reports [default: all]."),
) -> None:
    """Texts/s delivered tokenised to the feeding thread: worker processes against in series."""
    chosen = {"workers": workers, "batch_size": batch_size, "rounds": rounds, "reports": reports}
    settings = dataclasses.replace(QUICK if quick else FULL,
                                   **{name: value for name, value in chosen.items() if value is not None})
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per tokeniser, as in a worker process
    torch.set_num_threads(1)
    typer.echo("bench.report_tokens: reports tokenised in worker processes against in series on the feeding thread")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine("cpu").line())
    texts = read_iu_reports(iu_reports_archive())[:settings.reports]
    tokenizer = AutoTokenizer.from_pretrained(locate_weights(get_spec(MINILM_NAME)), local_files_only=True)
    reports = ReportRows(study_rows(texts), ReportTokenizer(tokenizer, MAX_LENGTH))
    typer.echo(f"reports: {len(texts):,} Indiana University reports (IMPRESSION + FINDINGS, mean "
               f"{sum(map(len, texts)) / len(texts):.0f} characters); {type(tokenizer).__name__} of {MINILM_NAME}, "
               f"{MAX_LENGTH} tokens, batches of {settings.batch_size}; best of {settings.rounds} interleaved round(s)")
    feeds: dict[str, Feed] = {}

    def contender(name: str, count: int):
        def run() -> float:
            result = feed(reports, settings.batch_size, count)
            if name not in feeds or result.seconds < feeds[name].seconds:
                feeds[name] = result
            return result.seconds
        return run

    names = {"in series": 0, f"{settings.workers} worker processes": settings.workers}
    best_seconds({name: contender(name, count) for name, count in names.items()}, settings.rounds)
    for name, result in feeds.items():
        typer.echo(f"{name}: {len(texts) / result.seconds:,.0f} texts/s delivered; feeding thread "
                   f"{result.thread_seconds / len(texts) * 1e6:.1f} us of CPU per text")
    serial, parallel = feeds["in series"], feeds[f"{settings.workers} worker processes"]
    typer.echo(Ratio("worker processes/in series, texts/s delivered", serial.seconds / parallel.seconds,
                     unit="x").line())
    typer.echo(Ratio("in series/worker processes, feeding thread's CPU per text",
                     serial.thread_seconds / max(parallel.thread_seconds, 1e-9), unit="x").line())
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
