"""`adaptor evaluate`: the evaluate stage's commands."""
import typer

app = typer.Typer(no_args_is_help=True, help="evaluate stage.")
