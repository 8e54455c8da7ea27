"""Runs the extract stage's commands: `python -m extract ...` is `adaptor extract ...`."""
from extract.cli import app

app(prog_name="python -m extract")
