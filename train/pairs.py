"""Image-text training pairs from two cache stores, joined by stored ids and checked, never by row order.

The published code aligned its image and text caches by row position, which silently misaligned
them for some tokenizers. Here every image row carries its study id, every text row is a study,
and the join is by that id: an image whose study has no usable text is left out and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adaptor_vlp.cache_schema import ArrayName, CacheStore, Modality, ProvenanceMismatch, store_path


class PairingError(ValueError):
    """The two stores cannot be paired: other dataset or manifest, or no rows in common."""


@dataclass(frozen=True)
class SplitPairs:
    """Row indices of one split's pairs: image_rows[i] in the image store pairs with text_rows[i]."""

    image_rows: np.ndarray
    text_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.image_rows)


@dataclass(frozen=True)
class StorePairing:
    """How an image store and a text store join, per split, and what was left out and why."""

    image_store: CacheStore
    text_store: CacheStore
    splits: Mapping[str, SplitPairs]
    left_out: Mapping[str, int] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """Both stores' provenance, as recorded in checkpoints and result files."""
        return {"image": self.image_store.provenance.to_json(), "text": self.text_store.provenance.to_json()}


def open_pair_stores(
    cache_dir: Path,
    dataset: str,
    vision: str,
    text: str,
    expect_image: Mapping[str, Any] | None = None,
    expect_text: Mapping[str, Any] | None = None,
) -> tuple[CacheStore, CacheStore]:
    """Opens the (dataset, vision) image store and (dataset, text) text store, checking what each was built from."""
    image_store = CacheStore.open(store_path(cache_dir, dataset, Modality.IMAGE, vision),
                                  expect={"modality": Modality.IMAGE, "backbone": vision, **(expect_image or {})})
    text_store = CacheStore.open(store_path(cache_dir, dataset, Modality.TEXT, text),
                                 expect={"modality": Modality.TEXT, "backbone": text, **(expect_text or {})})
    return image_store, text_store


def pair_stores(image_store: CacheStore, text_store: CacheStore) -> StorePairing:
    """Joins image rows to their study's text row by id, per split, keeping only rows valid in both."""
    image_prov, text_prov = image_store.provenance, text_store.provenance
    for name in ("dataset", "manifest_sha256"):
        if getattr(image_prov, name) != getattr(text_prov, name):
            raise ProvenanceMismatch(str(text_store.path), name, getattr(image_prov, name), getattr(text_prov, name))
    for store in (image_store, text_store):
        if not store.is_complete:
            raise PairingError(f"{store.path}: {len(store.incomplete_shards())} shards are incomplete; "
                               "rerun the extract command to finish it before training")

    text_row_of_study = {study: row for row, study in enumerate(text_store.ids)}
    text_valid = text_store.valid
    text_splits = text_store.splits
    image_valid = image_store.valid
    left_out = {"image unreadable": 0, "study has no text row": 0, "study text unusable": 0}
    rows: dict[str, tuple[list[int], list[int]]] = {}
    for image_row, (study, split) in enumerate(zip(image_store.group_ids, image_store.splits)):
        text_row = text_row_of_study.get(study)
        if not image_valid[image_row]:
            left_out["image unreadable"] += 1
        elif text_row is None:
            left_out["study has no text row"] += 1
        elif not text_valid[text_row]:
            left_out["study text unusable"] += 1
        else:
            if text_splits[text_row] != split:
                raise PairingError(f"study {study} is in split '{split}' in {image_store.path} but "
                                   f"'{text_splits[text_row]}' in {text_store.path}; rebuild both from one manifest")
            image_rows, text_rows = rows.setdefault(str(split), ([], []))
            image_rows.append(image_row)
            text_rows.append(text_row)
    if not rows:
        raise PairingError(f"no image in {image_store.path} pairs with a usable text in {text_store.path}")
    splits = {split: SplitPairs(np.array(i, dtype=np.int64), np.array(t, dtype=np.int64))
              for split, (i, t) in rows.items()}
    return StorePairing(image_store, text_store, splits, {k: v for k, v in left_out.items() if v})


def load_pooled(store: CacheStore, name: ArrayName = ArrayName.EMBEDDING) -> np.ndarray:
    """A pooled array, whole, in memory as float32: all of MIMIC-CXR at 768-d float16 is ~0.6 GB."""
    return store.read(name).astype(np.float32)
