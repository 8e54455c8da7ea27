"""The `adaptor` console command: one Typer app per stage, mounted under one name."""
import typer

from adaptor_vlp.cache_schema.cli import app as cache_app
from adaptor_vlp.evaluate.cli import app as evaluate_app
from adaptor_vlp.extract.cli import app as extract_app
from adaptor_vlp.inference.cli import export, predict_app
from adaptor_vlp.study.cli import app as study_app
from adaptor_vlp.train.cli import app as train_app

app = typer.Typer(
    help="Pre-train a vision-language Adaptor on frozen backbones from an embedding cache.",
    no_args_is_help=True,
)
app.add_typer(extract_app, name="extract", help="Run frozen backbones once over a dataset into the cache.")
app.add_typer(train_app, name="train", help="Train the Adaptor from cached embeddings.")
app.add_typer(evaluate_app, name="evaluate", help="Downstream heads and metrics on the cache.")
app.add_typer(cache_app, name="cache", help="Inspect and verify cache stores.")
app.add_typer(study_app, name="study", help="A whole study from one spec file: plan, run, report beside published "
                                            "numbers.")
app.command(name="export", help="Write a trained run (or the best of a folder of runs) as one folder to share: "
                               "config.json, model.safetensors, README.md.")(export)
app.add_typer(predict_app, name="predict", help="Embed, zero-shot score or match new radiographs with a trained model.")
