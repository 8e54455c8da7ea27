"""Runs the cache_schema stage's commands: `python -m adaptor_vlp.cache_schema ...` is `adaptor cache ...`."""
from adaptor_vlp.cache_schema.cli import app

app(prog_name="python -m adaptor_vlp.cache_schema")
