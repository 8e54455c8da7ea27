"""A dataset's cached image features, raw or through a trained Adaptor, joined by id with its manifest.

The evaluate stage never runs a backbone: every feature comes from a cache store. A store's rows
are joined to the manifest's rows by sample id (never by position), rows the extract stage could
not embed are dropped and counted, and a store is refused when it was not built from the
dataset's manifest or, when an Adaptor is applied, from the backbone, weights and preprocessing
that Adaptor was trained on (the error names the provenance field that differs).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from adaptor_vlp.cache_schema import (
    ArrayName,
    CacheStore,
    Modality,
    ProvenanceMismatch,
    StoreError,
    dataset_dir,
    require_finite,
    segmentation_store_path,
    store_path,
)
from adaptor_vlp.cache_schema.manifest import Manifest, manifest_sha256, read_manifest
from adaptor_vlp.cache_schema.provenance import check_same_embedding_space
from adaptor_vlp.evaluate.results import FeatureSpace
from adaptor_vlp.train.batches import DataSubset, FeatureReader, choose_subset
from adaptor_vlp.train.checkpoint import CheckpointKind, LoadedAdaptor, load_adaptor
from adaptor_vlp.train.encoding import autocast, encode_rows, resolve_device
from adaptor_vlp.train.model import AdaptorInputs

ENCODE_BATCH_ROWS = 1024
ENCODE_TOKEN_ROWS = 128
"""Images whose token sequences go through the Adaptor at once (a DINOv2-S image is 256 tokens)."""


@dataclass(frozen=True)
class AdaptorRun:
    """A trained Adaptor loaded from its run folder, for encoding cached features into its space."""

    run_dir: Path
    kind: CheckpointKind
    loaded: LoadedAdaptor

    @property
    def inputs(self) -> AdaptorInputs:
        return self.loaded.model.config.inputs

    def trained_on(self, modality: Modality) -> Mapping[str, Any]:
        """The provenance of the store of `modality` the Adaptor was trained on."""
        return self.loaded.record.provenance[Modality(modality).value]

    def reference(self) -> dict[str, str]:
        """What a result file records about the Adaptor: run folder, checkpoint, tensor file and its SHA-256."""
        return {"run_dir": str(self.run_dir), "checkpoint": self.kind.value,
                "weights": str(self.loaded.weights_path), "weights_sha256": self.loaded.weights_sha256}


@dataclass(frozen=True)
class DatasetRows:
    """The valid rows of one image store, joined by id with the dataset's manifest.

    Position i describes store row `rows[i]`. `labels` holds the manifest's values per label
    name: 1 positive, 0 negative, -1 uncertain, NaN not mentioned. `mask_targets` holds each
    row's segmentation target string, empty where the manifest has none. `dropped` counts the
    store rows left out, by reason.
    """

    store: CacheStore
    manifest: Manifest
    rows: np.ndarray
    ids: np.ndarray
    subjects: np.ndarray
    splits: np.ndarray
    label_names: tuple[str, ...]
    labels: np.ndarray
    mask_targets: np.ndarray
    dropped: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.rows)

    def positions(self, split: str) -> np.ndarray:
        """Positions (into this object's arrays) of the rows in `split`, in store order."""
        return np.flatnonzero(self.splits == split)

    def training_subset(self, available: np.ndarray, data_pct: float, seed: int) -> tuple[np.ndarray, DataSubset]:
        """The seeded `data_pct` percent of the `available` positions, and its record (with a hash of its ids).

        One seed's smaller fractions lie inside its larger ones (see `train.batches.choose_subset`).
        """
        return self._recorded(available, available[choose_subset(len(available), data_pct, seed)], data_pct, seed)

    def subset_of_ids(self, available: np.ndarray, data_pct: float, ids: frozenset[str],
                      seed: int) -> tuple[np.ndarray, DataSubset]:
        """The `available` positions whose id is in `ids` (a subset drawn elsewhere, by `seed`), and its record."""
        chosen = available[np.isin(self.ids[available].astype(str), np.array(sorted(ids), dtype=str))]
        return self._recorded(available, chosen, data_pct, seed)

    def _recorded(self, available: np.ndarray, chosen: np.ndarray, data_pct: float,
                  seed: int) -> tuple[np.ndarray, DataSubset]:
        ids = "\n".join(str(sample_id) for sample_id in self.ids[chosen])
        return chosen, DataSubset(data_pct=data_pct, seed=seed, n_available=len(available), n_chosen=len(chosen),
                                  ids_sha256=hashlib.sha256(ids.encode()).hexdigest())


def open_adaptor_run(run_dir: Path, kind: CheckpointKind = CheckpointKind.BEST, device: str = "cpu") -> AdaptorRun:
    """Loads a run folder's checkpoint, checked against the SHA-256 its record holds."""
    return AdaptorRun(Path(run_dir), kind, load_adaptor(run_dir, kind, str(resolve_device(device))))


def open_store_for(cache_dir: Path, dataset: str, modality: Modality, backbone: str,
                   run: AdaptorRun | None = None, segmentation_size: int | None = None) -> CacheStore:
    """Opens a complete store of `backbone`; with `run`, it must hold features that Adaptor was trained on.

    With `segmentation_size`, the image store of a segmentation task at that size (`<backbone>.seg<size>`,
    `adaptor extract images --segmentation-size`): it must record that input size, and through `run` it may
    be in another image frame than the Adaptor's training store (the whole image at 896 px, say).
    """
    if segmentation_size is None:
        path = store_path(cache_dir, dataset, modality, backbone)
    else:
        path = segmentation_store_path(cache_dir, dataset, backbone, segmentation_size)
        if not path.exists():
            raise StoreError(f"{path} does not exist: this segmentation reads the whole image at {segmentation_size} "
                             f"px; extract it with `adaptor extract images --dataset {dataset} --backbone {backbone} "
                             f"--segmentation-size {segmentation_size}` (with --tokens, or --feature-maps for the "
                             "U-Net, and --segmentation-views K for augmented views)")
    if run is None:
        store = CacheStore.open(path, expect={"modality": modality, "backbone": backbone})
    else:
        trained_on = run.trained_on(modality)
        store = CacheStore.open(path)
        check_same_embedding_space(str(store.path), store.provenance, trained_on,
                                   any_input_frame=segmentation_size is not None)
    recorded = store.provenance.preprocessing.get("image_size")
    if segmentation_size is not None and recorded != segmentation_size:
        raise ProvenanceMismatch(str(store.path), "preprocessing.image_size", segmentation_size, recorded)
    if not store.is_complete:
        raise StoreError(f"{store.path}: {len(store.incomplete_shards())} shards are incomplete; "
                         "rerun the extract command to finish it before evaluating")
    return store


def open_dataset_rows(cache_dir: Path, dataset: str, backbone: str, run: AdaptorRun | None = None,
                      segmentation_size: int | None = None) -> DatasetRows:
    """The dataset's image store for `backbone` (with `segmentation_size`, its segmentation store of that size)
    joined with its manifest; see `open_store_for` for the checks."""
    store = open_store_for(cache_dir, dataset, Modality.IMAGE, backbone, run, segmentation_size)
    folder = dataset_dir(cache_dir, dataset)
    manifest = read_manifest(folder)
    found_sha = manifest_sha256(folder)
    if store.provenance.manifest_sha256 != found_sha:
        raise ProvenanceMismatch(str(store.path), "manifest_sha256", found_sha, store.provenance.manifest_sha256)
    return _join_manifest(store, manifest)


def _join_manifest(store: CacheStore, manifest: Manifest) -> DatasetRows:
    """Joins the store's valid rows to the manifest rows of the same id; invalid rows are dropped and counted."""
    row_of_id = {row.dicom_id: row for row in manifest.rows}
    store_ids = store.ids
    missing = [str(sample_id) for sample_id in store_ids if sample_id not in row_of_id]
    if missing:
        raise StoreError(f"{store.path}: {len(missing)} rows have no row of that id in the {manifest.dataset} "
                         f"manifest, e.g. {missing[:3]}; rebuild the store from this manifest")
    valid = store.valid
    reasons = {failure.id: failure.reason.split(" (", 1)[0] for failure in store.failures()}
    dropped = Counter(f"invalid in the store: {reasons.get(str(i), 'not embedded')}" for i in store_ids[~valid])
    rows = np.flatnonzero(valid)
    manifest_rows = [row_of_id[store_ids[row]] for row in rows]
    names = manifest.label_names
    labels = np.array([[_label_value(row.labels.get(name)) for name in names] for row in manifest_rows],
                      dtype=np.float64).reshape(len(rows), len(names))
    return DatasetRows(
        store=store,
        manifest=manifest,
        rows=rows,
        ids=store_ids[rows],
        subjects=np.array([row.subject_id for row in manifest_rows], dtype=str),
        splits=store.splits[rows],
        label_names=tuple(names),
        labels=labels,
        mask_targets=np.array([row.mask for row in manifest_rows], dtype=object),
        dropped=dict(sorted(dropped.items())),
    )


def pooled_features(rows: DatasetRows, positions: np.ndarray, space: FeatureSpace, run: AdaptorRun | None,
                    device: str = "cpu") -> np.ndarray:
    """(N, D) float32 features of the rows at `positions`: the backbone's pooled embedding, or the
    Adaptor's image embedding computed batch by batch from the store's inputs."""
    store_rows = rows.rows[positions]
    if space is FeatureSpace.BACKBONE:
        features = np.empty((len(store_rows), rows.store.features.embedding_dim), dtype=np.float32)
        for start in range(0, len(store_rows), ENCODE_BATCH_ROWS):
            batch = store_rows[start:start + ENCODE_BATCH_ROWS]
            features[start:start + len(batch)] = rows.store.read(ArrayName.EMBEDDING, batch)
        require_finite(rows.store, store_rows, features)
        return features
    if run is None:
        raise ValueError("Adaptor features need a trained Adaptor: pass --run RUN_DIR")
    return adaptor_embeddings(rows.store, store_rows, run, device)


def adaptor_embeddings(store: CacheStore, store_rows: np.ndarray, run: AdaptorRun, device: str = "cpu") -> np.ndarray:
    """(N, P) float32 unit-norm Adaptor embeddings of a store's rows, through the path of the store's modality."""
    reader = FeatureReader(store, run.inputs)
    reader.check_finite(store_rows)
    model = run.loaded.model
    encode = model.encode_image if store.provenance.modality is Modality.IMAGE else model.encode_text
    if len(store_rows) == 0:
        return np.empty((0, model.config.projection_dim), dtype=np.float32)
    torch_device = resolve_device(device)
    return encode_rows(encode, reader, store_rows, ENCODE_BATCH_ROWS, torch_device).cpu().numpy()


def adaptor_token_embeddings(run: AdaptorRun, tokens: np.ndarray, mask: np.ndarray, device: str = "cpu",
                             chunk_rows: int = ENCODE_TOKEN_ROWS) -> np.ndarray:
    """(N, T, P) per-token Adaptor embeddings of (N, T, D) patch tokens with their (N, T) mask, as float16.

    Every image's tokens go through the trained Adaptor's image path on their own
    (`Adaptor.encode_image_tokens`), `chunk_rows` images at a time; the result is kept in float16,
    the cache's own dtype for tokens, so a dataset's embeddings take no more memory than needed.
    """
    model = run.loaded.model
    torch_device = resolve_device(device)
    embeddings = np.empty((*tokens.shape[:2], model.config.projection_dim), dtype=np.float16)
    with torch.no_grad():
        for start in range(0, len(tokens), chunk_rows):
            chunk = slice(start, start + chunk_rows)
            features = torch.from_numpy(tokens[chunk].astype(np.float32)).to(torch_device)
            with autocast(torch_device):
                encoded = model.encode_image_tokens(features, torch.from_numpy(mask[chunk]).to(torch_device))
            embeddings[chunk] = encoded.float().cpu().numpy()
    return embeddings


def _label_value(value: float | None) -> float:
    return np.nan if value is None else float(value)
