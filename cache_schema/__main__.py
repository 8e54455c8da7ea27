"""Runs the cache_schema stage's commands: `python -m cache_schema ...` is `adaptor cache ...`."""
from cache_schema.cli import app

app(prog_name="python -m cache_schema")
