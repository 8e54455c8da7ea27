"""The augmented training views of a segmentation store: their tokens and their masks, warped alike.

`adaptor extract images --segmentation-size S --segmentation-views K` writes, beside a dataset's
segmentation store of size S, K stores in which every image went through the seeded ShiftScaleRotate
of (its id, view k) (`cache_schema.warps`). Here each view store is opened and checked against the unwarped one
(same rows, same provenance but for the view), and each mask is warped by the very warp its image
went through, so the decoder can train on view ((epoch - 1) mod K) + 1 at every epoch.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from adaptor_vlp.cache_schema import CacheStore, ProvenanceMismatch, StoreError, segmentation_store_path
from adaptor_vlp.cache_schema.warps import draw_warp, view_seed, warp_mask
from adaptor_vlp.evaluate.features import DatasetRows

VIEW_FIELD = "segmentation_view"
"""The preprocessing entry that tells a view store (and which view) from the plain store."""


def open_view_rows(plain: DatasetRows, count: int) -> list[DatasetRows]:
    """The rows of views 1..count of `plain`'s store, refused unless each was extracted from the same rows with
    the same settings (provenance equal but for the view and its creation time)."""
    if count == 0:
        return []
    provenance, cache_dir = plain.store.provenance, plain.store.path.parents[2]
    size = plain.store.segmentation_size
    if size is None:
        raise StoreError(f"{plain.store.path} is not a segmentation store: augmented views warp the whole image at "
                         "the task's size; extract with --segmentation-size S --segmentation-views K and segment at "
                         "that size")
    views = []
    expected = _comparable(plain.store)
    for view in range(1, count + 1):
        path = segmentation_store_path(cache_dir, provenance.dataset, provenance.backbone, size, view)
        if not path.exists():
            raise StoreError(f"{path} does not exist: this segmentation trains on {count} augmented views; "
                             f"extract them with --segmentation-size {size} --segmentation-views {count}")
        store = CacheStore.open(path)
        found = store.provenance.to_json()
        if found["preprocessing"].get(VIEW_FIELD, {}).get("index") != view:
            raise ProvenanceMismatch(str(path), f"preprocessing.{VIEW_FIELD}.index", view,
                                     found["preprocessing"].get(VIEW_FIELD, "<absent>"))
        for name, value in expected.items():
            if _comparable(store).get(name) != value:
                raise ProvenanceMismatch(str(path), name if name != "preprocessing" else
                                         "preprocessing (other than the view)", value, _comparable(store).get(name))
        if not (np.array_equal(store.ids, plain.store.ids) and np.array_equal(store.valid[plain.rows],
                                                                               np.ones(len(plain), bool))):
            raise StoreError(f"{path}: its rows differ from {plain.store.path}'s (ids or failed images); "
                             "re-extract the views")
        if not store.is_complete:
            raise StoreError(f"{path}: {len(store.incomplete_shards())} shards are incomplete; rerun the extract "
                             "command to finish it")
        views.append(dataclasses.replace(plain, store=store))
    return views


def warped_masks(masks: np.ndarray, ids: np.ndarray, view: int) -> np.ndarray:
    """(N, H, W) masks each warped by the ShiftScaleRotate its image got in view `view`."""
    return np.stack([warp_mask(mask, draw_warp(view_seed(str(sample_id), view)))
                     for mask, sample_id in zip(masks, ids)]) if len(masks) else masks


def _comparable(store: CacheStore) -> dict:
    document = store.provenance.to_json()
    document.pop("created", None)
    document["preprocessing"] = {key: value for key, value in document["preprocessing"].items() if key != VIEW_FIELD}
    return document
