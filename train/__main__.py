"""Runs the train stage's commands: `python -m adaptor_vlp.train ...` is `adaptor train ...`."""
from adaptor_vlp.train.cli import app

app(prog_name="python -m adaptor_vlp.train")
