"""Runs the evaluate stage's commands: `python -m adaptor_vlp.evaluate ...` is `adaptor evaluate ...`."""
from adaptor_vlp.evaluate.cli import app

app(prog_name="python -m adaptor_vlp.evaluate")
