"""`adaptor cache`: inspect and verify cache stores."""
import contextlib
import json
from pathlib import Path
from typing import Iterator

import typer

from adaptor_vlp.cache_schema.store import StoreError
from adaptor_vlp.cache_schema.verify import format_summary, store_summary, verify_store

app = typer.Typer(no_args_is_help=True, help="Inspect and verify cache stores.")


@contextlib.contextmanager
def input_errors_exit(*errors: type[BaseException]) -> Iterator[None]:
    """Turns an error caused by the command's input into one line on stderr and exit code 2, not a traceback.

    Every stage's CLI uses it with the errors its input can cause (missing store or manifest,
    provenance mismatch, a bad option value), so they all fail the same way.
    """
    try:
        yield
    except errors as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def info(
    path: Path = typer.Argument(..., help="A store folder, e.g. cache/mimic-cxr/image/dinov2-s.zarr."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a store: rows, shards, splits, failures, arrays and provenance."""
    with input_errors_exit(StoreError):
        summary = store_summary(path)
    typer.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@app.command()
def verify(path: Path = typer.Argument(..., help="A store folder.")) -> None:
    """Check completeness, unique ids, finite values and provenance; exit 1 naming each problem."""
    report = verify_store(path)
    if report.ok:
        typer.echo(f"ok: {path}")
        return
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    raise typer.Exit(1)
