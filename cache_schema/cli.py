"""`adaptor cache`: inspect and verify cache stores."""
import json
from pathlib import Path

import typer

from cache_schema.store import StoreError
from cache_schema.verify import format_summary, store_summary, verify_store

app = typer.Typer(no_args_is_help=True, help="Inspect and verify cache stores.")


@app.command()
def info(
    path: Path = typer.Argument(..., help="A store folder, e.g. cache/mimic-cxr/image/dinov2-s.zarr."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a store: rows, shards, splits, failures, arrays and provenance."""
    try:
        summary = store_summary(path)
    except StoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
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
