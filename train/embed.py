"""Adaptor-space embeddings of a store, written as a new cache store so downstream code reads them like any other.

The new store mirrors its source row for row and shard for shard (ids, study ids, splits, failed
rows) under the backbone name `<backbone>+adaptor-<run>`. Its provenance names the checkpoint by
the SHA-256 of its tensor file and records the source store's provenance, so embeddings from a
retrained Adaptor are never mistaken for these. A killed run resumes by writing the shards still
missing; one run at a time holds the new store's lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adaptor_vlp.cache_schema import (
    ArrayName,
    CacheStore,
    FeatureShape,
    FolderLock,
    Modality,
    Provenance,
    StoreError,
    WriteFailed,
    store_path,
)
from adaptor_vlp.cache_schema.provenance import check_same_embedding_space
from adaptor_vlp.train.batches import FeatureReader
from adaptor_vlp.train.checkpoint import CheckpointKind, load_adaptor
from adaptor_vlp.train.encoding import encode_rows, resolve_device

ADAPTOR_BACKBONE_INFIX = "+adaptor-"
@dataclass(frozen=True)
class EmbedResult:
    """The store written, its rows, and how many shards this call wrote or found already done."""

    store: Path
    rows: int
    shards_written: int
    shards_already_done: int
    failed_rows: int


def adaptor_backbone_name(source_backbone: str, run_name: str) -> str:
    """The backbone name of a store of Adaptor embeddings, e.g. 'dinov2-s+adaptor-demo'."""
    return f"{source_backbone}{ADAPTOR_BACKBONE_INFIX}{run_name}"


def embed_store(
    run_dir: Path,
    cache_dir: Path,
    dataset: str,
    modality: Modality,
    out: Path | None = None,
    kind: CheckpointKind = CheckpointKind.BEST,
    device: str = "auto",
    batch_size: int = 1024,
) -> EmbedResult:
    """Embeds every valid row of the dataset's store for the run's backbone of `modality` into a new store.

    The source store must come from the backbone, weights and preprocessing the Adaptor was trained
    on (any dataset); ProvenanceMismatch names the first field that differs.
    """
    modality = Modality(modality)
    torch_device = resolve_device(device)
    loaded = load_adaptor(run_dir, kind, str(torch_device))
    trained_on = loaded.record.provenance[modality.value]
    source = CacheStore.open(store_path(cache_dir, dataset, modality, trained_on["backbone"]))
    check_same_embedding_space(str(source.path), source.provenance, trained_on)
    if not source.is_complete:
        raise StoreError(f"{source.path}: {len(source.incomplete_shards())} shards are incomplete; "
                         "finish extracting it before embedding")
    config = loaded.model.config
    reader = FeatureReader(source, config.inputs)
    encode = loaded.model.encode_image if modality is Modality.IMAGE else loaded.model.encode_text
    run_name = Path(run_dir).resolve().name
    backbone = adaptor_backbone_name(source.provenance.backbone, run_name)
    provenance = Provenance(
        dataset=source.provenance.dataset,
        manifest_sha256=source.provenance.manifest_sha256,
        modality=modality,
        backbone=backbone,
        weights_id=f"adaptor-run:{run_name}/{loaded.weights_path.name}",
        weights_sha256=loaded.weights_sha256,
        preprocessing={"source": _without_created(source.provenance.to_json()), "adaptor": config.to_dict()},
        pooling=f"adaptor-{config.inputs.value}",
    )
    target_path = Path(out) if out is not None else store_path(cache_dir, dataset, modality, backbone)
    with FolderLock.acquire(target_path, "store"):
        target = CacheStore.create_or_resume(target_path, provenance, list(source.ids), list(source.group_ids),
                                             list(source.splits), FeatureShape(config.projection_dim),
                                             shard_rows=source.shard_rows)
        pending = target.incomplete_shards()
        valid, ids = source.valid, source.ids
        reasons = {failure.id: failure.reason for failure in source.failures()}
        for span in pending:
            rows = np.arange(span.start, span.stop)
            good = rows[valid[rows]]
            embeddings = np.full((len(rows), config.projection_dim), np.nan, dtype=np.float32)
            if len(good):
                embeddings[good - span.start] = encode_rows(encode, reader, good, batch_size,
                                                            torch_device).cpu().numpy()
            failed = {int(row): f"source row invalid: {reasons.get(str(ids[row]), 'not embedded')}"
                      for row in rows[~valid[rows]]}
            try:
                target.write_shard(span.index, {ArrayName.EMBEDDING: embeddings}, failed)
            except WriteFailed as error:
                raise target.write_stopped(error) from error
    return EmbedResult(target.path, target.n_rows, len(pending), len(target.shards()) - len(pending),
                       int((~valid).sum()))


def _without_created(provenance: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in provenance.items() if name != "created"}
