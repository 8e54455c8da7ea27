"""`adaptor cache`: inspect, verify and repair cache stores, one store or every store under a folder."""
import contextlib
import json
from pathlib import Path
from typing import Iterator

import typer

from adaptor_vlp.cache_schema.inventory import (
    NothingCached,
    contents_summary,
    find_contents,
    format_contents,
    format_summary,
    is_store,
    store_summary,
)
from adaptor_vlp.cache_schema.lock import FolderLocked
from adaptor_vlp.cache_schema.repair import repair_store
from adaptor_vlp.cache_schema.store import StoreError
from adaptor_vlp.cache_schema.verify import VerifyReport, verify_manifest, verify_store
from adaptor_vlp.cache_schema.writes import WriteFailed

app = typer.Typer(no_args_is_help=True, help="Inspect, verify and repair cache stores.")

WRITE_FAILED_EXIT = 1
"""Exit code of a run stopped by a failed write (a full disk): not the input's fault, unlike exit code 2."""


@contextlib.contextmanager
def input_errors_exit(*errors: type[BaseException]) -> Iterator[None]:
    """Turns an error caused by the command's input into one line on stderr and exit code 2, not a traceback.

    Every stage's CLI uses it with the errors its input can cause (missing store or manifest,
    provenance mismatch, a bad option value), so they all fail the same way. A failed write
    (`WriteFailed`: a full disk, a read-only folder) is reported the same way with exit code 1;
    its message says what is kept and how to resume. A folder another run holds is an input error.
    """
    try:
        yield
    except WriteFailed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(WRITE_FAILED_EXIT) from None
    except (FolderLocked, *errors) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


PATH_ARGUMENT = typer.Argument(..., help="A store (e.g. cache/mimic-cxr/image/dinov2-s.zarr) or a folder holding "
                                         "stores and manifests (e.g. cache).")


@app.command()
def info(
    path: Path = PATH_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a store (rows, shards, splits, failures, arrays, provenance), or list a folder's contents."""
    with input_errors_exit(StoreError):
        if is_store(path):
            summary = store_summary(path)
            text = format_summary(summary)
        else:
            summary = contents_summary(path)
            text = format_contents(summary)
    typer.echo(json.dumps(summary, indent=2) if as_json else text)


@app.command()
def verify(
    path: Path = PATH_ARGUMENT,
    quick: bool = typer.Option(False, "--quick", help="Compare the shard files' sizes with their markers but skip "
                               "recomputing their SHA-256 digests."),
) -> None:
    """Check completeness, checksums, ids, masks, finite values and provenance; exit 1 naming each problem."""
    with input_errors_exit(NothingCached):
        contents = None if is_store(path) else find_contents(path)
    if contents is None:
        failed = not _echo_report(verify_store(path, quick=quick))
        raise typer.Exit(1 if failed else 0)
    failing = 0
    for folder in contents.manifests:
        for problem in verify_manifest(folder):
            typer.echo(f"problem: {folder}: {problem}", err=True)
            failing += 1
    for store in contents.stores:
        failing += not _echo_report(verify_store(store, quick=quick))
    checked = f"{len(contents.stores)} stores and {len(contents.manifests)} manifests under {path}"
    typer.echo(f"{'ok' if not failing else 'problems'}: {checked}" + (f", {failing} failing" if failing else ""))
    raise typer.Exit(1 if failing else 0)


@app.command()
def repair(path: Path = typer.Argument(..., help="A store that `adaptor cache verify` reports damaged.")) -> None:
    """Mark the shards that fail verification incomplete (markers and their data removed) for the next run to redo."""
    with input_errors_exit(StoreError):
        if not is_store(path):
            raise StoreError(f"{path}: not a store (no zarr.json); repair takes one store, e.g. "
                             "cache/mimic-cxr/image/dinov2-s.zarr (`adaptor cache verify cache` lists them)")
        outcome = repair_store(path)
    if outcome.shards_marked_incomplete:
        shards = ", ".join(str(index) for index in outcome.shards_marked_incomplete)
        typer.echo(f"repaired: {path}: shards {shards} marked incomplete (markers and data removed); rerun the "
                   "command that wrote the store, with the same options: it rewrites only those shards")
    elif outcome.report.ok:
        typer.echo(f"nothing to repair: {path} verifies")
    for problem in outcome.incomplete:
        typer.echo(f"still to do: {path}: {problem}")
    for problem in outcome.unrepairable:
        typer.echo(f"not repaired: {path}: {problem}", err=True)
    raise typer.Exit(1 if outcome.unrepairable else 0)


def _echo_report(report: VerifyReport) -> bool:
    """Prints one store's verdict, problems and notes; True when it verifies."""
    for note in report.notes:
        typer.echo(f"note: {report.path}: {note}", err=True)
    if report.ok:
        typer.echo(f"ok: {report.path}" + ("" if report.checksums else " (sizes only: --quick skips checksums)"))
        return True
    for problem in report.problems:
        typer.echo(f"problem: {report.path}: {problem}", err=True)
    if report.damaged_shards:
        typer.echo(f"to repair: adaptor cache repair {report.path}, then rerun the command that wrote the store",
                   err=True)
    return False
