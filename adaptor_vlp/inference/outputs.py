"""What `adaptor predict` writes: embeddings as a cache store or as .npy + ids CSV, and score tables as CSV.

An embedding store is an ordinary cache store (`cache_schema`): one row per input, in input
order, unreadable inputs recorded as failures with their reason, provenance naming the
Adaptor (its weights' SHA-256) and the backbone store it embeds like, as `adaptor train embed`
does for cached rows. Every file is written to a temporary name and renamed into place.
"""
from __future__ import annotations

import csv
import hashlib
import io
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance
from adaptor_vlp.cache_schema.writes import write_together
from adaptor_vlp.extract.weights import weights_sha256
from adaptor_vlp.inference.model import AdaptorModel, ImageEmbeddings

PREDICT_DATASET = "predict"
PREDICT_SPLIT = "test"
ZARR_SUFFIX = ".zarr"
NPY_SUFFIX = ".npy"


class EmbeddingFormat(str, Enum):
    """A cache store (`.zarr`), or a float32 `.npy` matrix with an ids CSV beside it (`.npy`)."""

    ZARR = "zarr"
    NPY = "npy"

    @classmethod
    def of(cls, path: Path) -> EmbeddingFormat:
        suffix = Path(path).suffix
        if suffix == ZARR_SUFFIX:
            return cls.ZARR
        if suffix == NPY_SUFFIX:
            return cls.NPY
        raise ValueError(f"--out {path}: name a {ZARR_SUFFIX} store or a {NPY_SUFFIX} file")


def write_embeddings(model: AdaptorModel, embedded: ImageEmbeddings, out: Path) -> list[Path]:
    """Writes the embeddings in the format `out`'s suffix names; returns the paths written."""
    out = Path(out)
    if EmbeddingFormat.of(out) is EmbeddingFormat.ZARR:
        return [_write_store(model, embedded, out)]
    ids_path = out.with_suffix(".ids.csv")
    matrix = io.BytesIO()
    np.save(matrix, embedded.embeddings.astype(np.float32), allow_pickle=False)
    write_together({out: matrix.getvalue(), ids_path: _csv(["row", "image"], enumerate(embedded.names))})
    return [out, ids_path]


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """A CSV file, written whole or not at all."""
    write_together({Path(path): _csv(header, rows)})
    return Path(path)


def _write_store(model: AdaptorModel, embedded: ImageEmbeddings, out: Path) -> Path:
    """One row per input in input order: the embedding of a readable one, the reason of an unreadable one."""
    names = list(embedded.inputs)
    position = {name: row for row, name in enumerate(names)}
    trained_on = model.record.trained_on(Modality.IMAGE)
    config = model.adaptor.config
    provenance = Provenance(
        dataset=PREDICT_DATASET, manifest_sha256=hashlib.sha256("\n".join(names).encode()).hexdigest(),
        modality=Modality.IMAGE, backbone=f"{trained_on['backbone']}+adaptor-{model.record.run_name}",
        weights_id=f"adaptor:{model.record.run_name}/{model.record.checkpoint.value}",
        weights_sha256=weights_sha256(model.adaptor),
        preprocessing={"source": {k: v for k, v in trained_on.items() if k != "created"}, "adaptor": config.to_dict()},
        pooling=f"adaptor-{config.inputs.value}")
    store = CacheStore.create(out, provenance, names, names, [PREDICT_SPLIT] * len(names),
                              FeatureShape(config.projection_dim))
    embeddings = np.full((len(names), config.projection_dim), np.nan, dtype=np.float32)
    embeddings[[position[name] for name in embedded.names]] = embedded.embeddings
    failures = {position[item.name]: f"unreadable image: {item.reason}" for item in embedded.unreadable}
    for span in store.shards():
        store.write_shard(span.index, {ArrayName.EMBEDDING: embeddings[span.rows]},
                          {row: reason for row, reason in failures.items() if span.start <= row < span.stop})
    return out


def _csv(header: Sequence[str], rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
