"""Runs the train stage's commands: `python -m train ...` is `adaptor train ...`."""
from train.cli import app

app(prog_name="python -m train")
