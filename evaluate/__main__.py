"""Runs the evaluate stage's commands: `python -m evaluate ...` is `adaptor evaluate ...`."""
from evaluate.cli import app

app(prog_name="python -m evaluate")
