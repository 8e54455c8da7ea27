"""`python -m adaptor_vlp ...` is the `adaptor` console command."""
from adaptor_vlp.cli import app

app(prog_name="python -m adaptor_vlp")
