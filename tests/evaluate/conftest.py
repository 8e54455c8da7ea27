"""A tiny downstream dataset with real label, text and mask signal, and an Adaptor trained on it.

Each study has a latent vector z. Its three labels are thresholds of z's first coordinates, its
images' pooled embeddings are a fixed linear map of z plus noise, and its report's embedding is
another linear map of z plus noise, so heads, retrieval and prompts all have something to find.
Images positive for "Opacity" carry a 2x2-cell rectangle in a 4x4 token grid: their patch tokens
light up over it and their mask target (SIIM run-length form) covers it. The image store lists
its rows in the reverse of the manifest's order, so only a join by id gets the labels right, and
two images are recorded as unreadable.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance, dataset_dir, store_path
from adaptor_vlp.cache_schema.manifest import Manifest, ManifestRow, Split, manifest_sha256, write_manifest
from adaptor_vlp.cache_schema.targets import decode_mask, encode_rle_target
from adaptor_vlp.evaluate.zeroshot import (
    PromptRole,
    prompt_dataset,
    prompt_id,
    read_prompt_manifest,
    write_prompt_manifest,
)
from adaptor_vlp.train.loop import train_adaptor
from adaptor_vlp.train.pairs import pair_stores
from adaptor_vlp.train.recipe import DEMO

DATASET = "toy-cxr"
VISION = "toy-vit"
TEXT = "toy-bert"
LABELS = ("Effusion", "Edema", "Opacity")
PROMPTS = "toy"
GRID = 4
MASK_SIDE = 32
LATENT_DIM = 6
IMAGE_DIM = 16
TEXT_DIM = 12
TOKEN_DIM = IMAGE_DIM
"""Patch tokens are as wide as the pooled embedding, as a real backbone's are."""
UNREADABLE_ROWS = (0, 5)
"""Image store rows recorded as failed at extraction."""
TOY_RECIPE = DEMO.with_overrides(dict(epochs=12, batch_size=32, projection_dim=32, num_heads=4, ffn_dim=64,
                                      patience=0))
IMAGE_PREPROCESSING = {"image_size": 32, "geometry": [{"op": "resize", "size": 32, "interpolation": "bicubic"}],
                       "tokens": True, "views": 0}
PROMPTS_TOML = """
[classes.Effusion]
positive = "effusion present"
negative = "no effusion"

[classes.Edema]
positive = "edema present"
negative = "no edema"
"""


@dataclass(frozen=True)
class ToyDataset:
    """Where the toy cache lies and what it holds."""

    cache_dir: Path
    dataset: str
    manifest: Manifest
    image_store: CacheStore
    text_map: np.ndarray


def image_provenance(dataset: str, manifest_sha: str, **overrides: Any) -> Provenance:
    fields = dict(dataset=dataset, manifest_sha256=manifest_sha, modality=Modality.IMAGE, backbone=VISION,
                  weights_id="toy-vit:random", weights_sha256="a" * 64, preprocessing=IMAGE_PREPROCESSING,
                  pooling="cls", created="2024-01-01T00:00:00+00:00")
    return Provenance(**{**fields, **overrides})


def build_toy_dataset(cache_dir: Path, dataset: str = DATASET, n_subjects: int = 60, seed: int = 0,
                      with_text: bool = True, with_tokens: bool = True, **image_overrides: Any) -> ToyDataset:
    """Writes the manifest, the image store (with patch tokens, unless told not to) and, with `with_text`,
    the text store; `image_overrides` replace fields of the image store's provenance."""
    rng = np.random.default_rng(seed)
    image_map = rng.standard_normal((LATENT_DIM, IMAGE_DIM))
    text_map = rng.standard_normal((LATENT_DIM, TEXT_DIM))
    rows, latents, studies, texts = [], [], [], []
    for subject in range(n_subjects):
        split = (Split.TRAIN, Split.TRAIN, Split.TRAIN, Split.VALIDATE, Split.TEST)[subject % 5]
        for study_index in range(2):
            study = f"s{subject:03d}{study_index}"
            z = rng.standard_normal(LATENT_DIM)
            labels = {"Effusion": float(z[0] > 0.3), "Edema": float(z[1] > 0), "Opacity": float(z[2] > 0.5)}
            if abs(z[1]) < 0.15:
                labels["Edema"] = -1.0
            if z[3] > 1.8:
                labels["Effusion"] = None
            studies.append((study, split))
            texts.append(z @ text_map / np.sqrt(LATENT_DIM) + 0.3 * rng.standard_normal(TEXT_DIM))
            for image_index in range(1 + (subject + study_index) % 2):
                rows.append(ManifestRow(
                    dicom_id=f"img{subject:03d}{study_index}{image_index}", study_id=study,
                    subject_id=f"p{subject:03d}", split=split, view="PA", image_path="", report_text="a report",
                    report_issue="", labels=labels, mask=_mask_target(rng, labels["Opacity"] == 1.0)))
                latents.append(z)
    manifest = Manifest(dataset=dataset, image_root=Path("."), reports_root=Path("."), rows=tuple(rows),
                        label_names=LABELS)
    folder = dataset_dir(cache_dir, dataset)
    write_manifest(manifest, folder)
    sha = manifest_sha256(folder)

    latents = np.array(latents)
    embeddings = latents @ image_map / np.sqrt(LATENT_DIM) + 0.3 * rng.standard_normal((len(rows), IMAGE_DIM))
    order = np.arange(len(rows))[::-1]
    arrays = {ArrayName.EMBEDDING: embeddings[order]}
    features = FeatureShape(IMAGE_DIM)
    if with_tokens:
        tokens = np.stack([_tokens(rng, row.mask) for row in rows])
        arrays.update({ArrayName.TOKENS: tokens[order], ArrayName.TOKEN_MASK: np.ones(tokens.shape[:2], dtype=bool)})
        features = FeatureShape(IMAGE_DIM, GRID * GRID, TOKEN_DIM)
    image_store = _write_store(
        store_path(cache_dir, dataset, Modality.IMAGE, VISION), image_provenance(dataset, sha, **image_overrides),
        [rows[i].dicom_id for i in order], [rows[i].study_id for i in order], [rows[i].split.value for i in order],
        features, arrays, failed={row: "unreadable image: truncated" for row in UNREADABLE_ROWS})
    if with_text:
        _write_store(store_path(cache_dir, dataset, Modality.TEXT, TEXT), text_provenance(dataset, sha),
                     [study for study, _ in studies], [study for study, _ in studies],
                     [split.value for _, split in studies], FeatureShape(TEXT_DIM),
                     {ArrayName.EMBEDDING: np.array(texts)})
    return ToyDataset(Path(cache_dir), dataset, manifest, image_store, text_map)


def text_provenance(dataset: str, manifest_sha: str) -> Provenance:
    return Provenance(dataset=dataset, manifest_sha256=manifest_sha, modality=Modality.TEXT, backbone=TEXT,
                      weights_id="toy-bert:random", weights_sha256="b" * 64, preprocessing={"max_length": 8},
                      pooling="pooler", created="2024-01-01T00:00:00+00:00")


def build_prompt_store(toy: ToyDataset, name: str, prompts_file: Path) -> None:
    """The manifest and text store of prompt set `name`: class i's positive prompt embeds like the report of
    a study whose latent is +3 along coordinate i, its negative prompt like one at -3."""
    write_prompt_manifest(toy.cache_dir, name, prompts_file)
    ids, embeddings = [], []
    for coordinate, entry in enumerate(read_prompt_manifest(toy.cache_dir, name).classes):
        for role, sign in ((PromptRole.POSITIVE, 3.0), (PromptRole.NEGATIVE, -3.0)):
            latent = np.zeros(LATENT_DIM)
            latent[coordinate % LATENT_DIM] = sign
            ids.append(prompt_id(entry.name, role))
            embeddings.append(latent @ toy.text_map / np.sqrt(LATENT_DIM))
    sha = manifest_sha256(dataset_dir(toy.cache_dir, prompt_dataset(name)))
    _write_store(store_path(toy.cache_dir, prompt_dataset(name), Modality.TEXT, TEXT),
                 text_provenance(prompt_dataset(name), sha), ids, ids, ["test"] * len(ids), FeatureShape(TEXT_DIM),
                 {ArrayName.EMBEDDING: np.array(embeddings)})


def train_toy_adaptor(toy: ToyDataset, run_dir: Path) -> Path:
    """An Adaptor trained on the toy dataset's image-text pairs (a second or two on one core)."""
    text_store = CacheStore.open(store_path(toy.cache_dir, toy.dataset, Modality.TEXT, TEXT))
    train_adaptor(pair_stores(toy.image_store, text_store), TOY_RECIPE, run_dir, device="cpu")
    return run_dir


def _mask_target(rng: np.random.Generator, positive: bool) -> str:
    """An empty mask, or a rectangle of 2x2 grid cells at a random cell, as an `rle:` target."""
    mask = np.zeros((MASK_SIDE, MASK_SIDE), dtype=bool)
    if positive:
        cell = MASK_SIDE // GRID
        top, left = rng.integers(0, GRID - 1, size=2)
        mask[top * cell:(top + 2) * cell, left * cell:(left + 2) * cell] = True
    return encode_rle_target(mask)


def _tokens(rng: np.random.Generator, target: str) -> np.ndarray:
    """Patch tokens that are bright over the mask's cells: the cell's covered share times a fixed direction."""
    cells = decode_mask(target).reshape(GRID, MASK_SIDE // GRID, GRID, MASK_SIDE // GRID).mean(axis=(1, 3))
    direction = np.linspace(1.0, 2.0, TOKEN_DIM)
    return cells.reshape(-1, 1) * direction + 0.3 * rng.standard_normal((GRID * GRID, TOKEN_DIM))


def _write_store(path: Path, provenance: Provenance, ids: list[str], group_ids: list[str], splits: list[str],
                 features: FeatureShape, arrays: dict, failed: dict[int, str] | None = None) -> CacheStore:
    store = CacheStore.create(path, provenance, ids, group_ids, splits, features, shard_rows=64)
    for span in store.shards():
        store.write_shard(span.index, {name: values[span.rows] for name, values in arrays.items()},
                          {row: reason for row, reason in (failed or {}).items() if span.start <= row < span.stop})
    return CacheStore.open(path)


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyDataset:
    """The toy dataset and its prompt store, shared read-only by the evaluate tests."""
    root = tmp_path_factory.mktemp("evaluate-toy")
    toy = build_toy_dataset(root / "cache")
    prompts_file = root / "toy-prompts.toml"
    prompts_file.write_text(PROMPTS_TOML)
    build_prompt_store(toy, PROMPTS, prompts_file)
    return toy


@pytest.fixture(scope="session")
def toy_run(toy: ToyDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding an Adaptor trained on the toy dataset."""
    return train_toy_adaptor(toy, tmp_path_factory.mktemp("evaluate-run") / "toy-run")


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """One intra-op thread: these tiny models run slower with two threads contending on a 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
