"""`adaptor train`: the train stage's commands."""
import typer

app = typer.Typer(no_args_is_help=True, help="train stage.")
