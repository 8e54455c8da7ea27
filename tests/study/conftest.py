"""Tiny studies on small demo trees and tiny seeded backbones: a whole study runs in seconds.

The demo trees are written once per session and only read. Each study gets its own spec file,
cache and output folder under the test's temporary folder, so runs never share records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptor_vlp.extract.demo import write_demo_dataset
from adaptor_vlp.extract.demo.covidx_tree import write_demo_covidx
from adaptor_vlp.extract.demo.rsna_tree import write_demo_rsna
from adaptor_vlp.extract.demo.siim_tree import write_demo_siim

TASKS = {
    "rsna-classification": 'dataset = "rsna"\nkind = "classify"\nmetric = "auroc"',
    "covidx-classification": 'dataset = "covidx"\nkind = "classify"\nmetric = "accuracy"',
    "siim-segmentation": 'dataset = "siim"\nkind = "segment"\nmetric = "dice-published"\nepochs = 3',
    "rsna-segmentation": 'dataset = "rsna"\nkind = "segment"\nmetric = "dice-positive"\nepochs = 3',
}
"""Every task kind of the paper's study, each on its demo tree; options shared by all are added below."""


@dataclass(frozen=True)
class DemoTrees:
    """Where the session's demo trees lie."""

    mimic: Path
    rsna: Path
    covidx: Path
    siim: Path


@pytest.fixture(scope="session")
def demo_trees(tmp_path_factory: pytest.TempPathFactory) -> DemoTrees:
    root = tmp_path_factory.mktemp("study-trees")
    trees = DemoTrees(root / "mimic", root / "rsna", root / "covidx", root / "siim")
    write_demo_dataset(trees.mimic, subjects=14, seed=1)
    write_demo_rsna(trees.rsna, images=60, seed=2)
    write_demo_covidx(trees.covidx, images=60, seed=3)
    write_demo_siim(trees.siim, images=40, seed=4)
    return trees


def write_spec(folder: Path, trees: DemoTrees, tasks: dict[str, str] = TASKS, image: tuple[str, ...] = ("tiny-vit",),
               text: tuple[str, ...] = ("tiny-bert",), extra: str = "", covidx_root: Path | None = None) -> Path:
    """A study spec over the demo trees with its own cache and output folder in `folder`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    task_tables = "\n".join(f"[tasks.{name}]\n{body}\nfractions = [50, 100]\nresamples = 20\n"
                            for name, body in tasks.items())
    spec = f"""
[study]
name = "tiny"
cache = "{folder / 'cache'}"
out = "{folder / 'out'}"
device = "cpu"
torch_threads = 1

[pretraining]
root = "{trees.mimic}"

[backbones]
image = {json.dumps(list(image))}
text = {json.dumps(list(text))}

[extract]
device = "cpu"
workers = 0

[adaptor]
recipe = "demo"
[adaptor.settings]
epochs = 3

[datasets.rsna]
layout = "rsna"
root = "{trees.rsna}"

[datasets.covidx]
layout = "covidx"
root = "{covidx_root or trees.covidx}"

[datasets.siim]
layout = "siim"
root = "{trees.siim}"

{task_tables}
{extra}
"""
    path = folder / "study.toml"
    path.write_text(spec)
    return path


PUBLISHED = """
[published]
source = "values made up for this test"
note = "test note"

[published.notes]
rsna-classification = "a note on the published RSNA values"

[published.results.rsna-classification.tiny-vit]
tiny-bert = [50.0, 60.0]

[published.results.siim-segmentation.tiny-resnet]
tiny-bert = [73.1, 73.1]

[[published.methods]]
name = "Another method"
trainable_parameters = 1000
results = { rsna-classification = [40.0, 45.0] }
"""
LEFT_OUT_REASON = "its intermediate maps are not cached"


@dataclass(frozen=True)
class FinishedStudy:
    """A study run to the end (two image backbones, one left out of SIIM segmentation and segmented by the U-Net
    on RSNA, SIIM segmented on the whole image at 32 px with two augmented views, published values), the output
    of its run, and the manifest step done by hand before it."""

    spec: Path
    output: str
    done_by_hand: str


@pytest.fixture(scope="session")
def finished_study(demo_trees: DemoTrees, tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    from typer.testing import CliRunner

    from adaptor_vlp.cli import app

    folder = tmp_path_factory.mktemp("finished-study")
    tasks = {**TASKS, "siim-segmentation": TASKS["siim-segmentation"] + "\nimage_size = 32\nviews = 2"
             + f'\nleft_out = [{{ image = "tiny-resnet", reason = "{LEFT_OUT_REASON}" }}]',
             "rsna-segmentation": TASKS["rsna-segmentation"] + '\nunet = ["tiny-resnet"]\nunet_width_divisor = 8'}
    spec = write_spec(folder, demo_trees, tasks=tasks, image=("tiny-vit", "tiny-resnet"), extra=PUBLISHED)
    runner = CliRunner()
    by_hand = runner.invoke(app, ["extract", "manifest", "--dataset", "rsna", "--root", str(demo_trees.rsna),
                                  "--out", str(folder / "cache")])
    assert by_hand.exit_code == 0, by_hand.output
    result = runner.invoke(app, ["study", "run", str(spec)])
    assert result.exit_code == 0, result.output
    return FinishedStudy(spec, result.output, "manifest rsna")
