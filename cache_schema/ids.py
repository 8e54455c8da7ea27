"""Sample ids as plain uint8 byte rows, so that any Zarr v3 implementation can read them.

Zarr v3's core data types hold no strings (variable-length strings are an extension), so an id
is stored as its ASCII bytes, zero-padded to the widest id in the store.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class InvalidId(ValueError):
    """An id that cannot be stored: empty, non-ASCII, or holding a NUL byte."""


def encode_ids(ids: Sequence[str], width: int | None = None) -> np.ndarray:
    """Returns an (N, width) uint8 array of the ids' ASCII bytes, zero-padded on the right."""
    encoded = []
    for position, sample_id in enumerate(ids):
        if not sample_id:
            raise InvalidId(f"id at position {position} is empty")
        try:
            raw = sample_id.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidId(f"id {sample_id!r} at position {position} is not ASCII") from None
        if b"\0" in raw:
            raise InvalidId(f"id {sample_id!r} at position {position} contains a NUL byte")
        encoded.append(raw)
    needed = max((len(raw) for raw in encoded), default=1)
    width = needed if width is None else width
    if needed > width:
        raise InvalidId(f"an id is {needed} bytes long, wider than the store's {width}")
    return np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)


def decode_ids(rows: np.ndarray) -> np.ndarray:
    """Turns (N, width) uint8 id rows back into an array of Python strings."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    if rows.ndim != 2:
        raise ValueError(f"id rows must be 2-D (sample, id_byte), got shape {rows.shape}")
    return rows.view(f"S{rows.shape[1]}").ravel().astype(str)
