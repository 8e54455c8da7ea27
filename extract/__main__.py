"""Runs the extract stage's commands: `python -m adaptor_vlp.extract ...` is `adaptor extract ...`."""
from adaptor_vlp.extract.cli import app

app(prog_name="python -m adaptor_vlp.extract")
