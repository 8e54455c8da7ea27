"""Nearest reports for new radiographs: images embedded live, reports from a text store of the cache.

The text store must embed like the one the Adaptor was trained on (same backbone, weights and
tokenizer settings; any dataset). Reports are named by their store id (a study id), never by
their text: MIMIC-CXR is credentialed data, and its report text stays in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from adaptor_vlp.cache_schema import CacheStore, Modality, StoreError, store_path
from adaptor_vlp.cache_schema.provenance import check_same_embedding_space
from adaptor_vlp.inference.inputs import ImageInput, Unreadable
from adaptor_vlp.inference.model import AdaptorModel, ImagesDone
from adaptor_vlp.train.batches import FeatureReader
from adaptor_vlp.train.encoding import encode_rows

REPORT_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Retrieved:
    """For each readable image (rows), the ids of its top-k reports best first and their cosine similarities."""

    names: tuple[str, ...]
    report_ids: np.ndarray
    scores: np.ndarray
    unreadable: tuple[Unreadable, ...]
    store: Path


def report_store(model: AdaptorModel, cache_dir: Path, dataset: str) -> CacheStore:
    """The dataset's text store for the model's text backbone, checked to embed like the one it was trained on."""
    trained_on = model.record.trained_on(Modality.TEXT)
    path = store_path(Path(cache_dir), dataset, Modality.TEXT, trained_on["backbone"])
    store = CacheStore.open(path)
    check_same_embedding_space(str(store.path), store.provenance, trained_on)
    if not store.is_complete:
        raise StoreError(f"{store.path}: {len(store.incomplete_shards())} shards are incomplete; finish extracting "
                         "it (rerun `adaptor extract texts`) before retrieving from it")
    return store


def retrieve_reports(model: AdaptorModel, images: Iterable[ImageInput], cache_dir: Path, dataset: str, k: int = 5,
                     batch_size: int = 16, on_batch: ImagesDone | None = None) -> Retrieved:
    """The k reports of the dataset's text store nearest each image in the Adaptor's space."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    store = report_store(model, cache_dir, dataset)
    rows = np.flatnonzero(store.valid)
    if len(rows) == 0:
        raise StoreError(f"{store.path}: holds no embedded report")
    reports = encode_rows(model.adaptor.encode_text, FeatureReader(store, model.adaptor.config.inputs), rows,
                          REPORT_CHUNK_ROWS, model.device).cpu().numpy()
    embedded = model.embed_images(images, batch_size, on_batch)
    similarity = model.similarity(embedded.embeddings, reports)
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :min(k, len(rows))]
    ids = store.ids[rows]
    return Retrieved(embedded.names, ids[top], np.take_along_axis(similarity, top, axis=1), embedded.unreadable,
                     store.path)
