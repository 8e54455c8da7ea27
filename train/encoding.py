"""Running an Adaptor over stored rows: device choice, mixed precision, chunked encoding."""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from adaptor_vlp.train.batches import FeatureReader


class DeviceError(ValueError):
    """The requested device is not available on this machine."""


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; anything else is taken as a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision elsewhere (CPU results must be bitwise reproducible)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def encode_rows(encode: Callable[..., Tensor], reader: FeatureReader, rows: np.ndarray, chunk_rows: int,
                device: torch.device) -> Tensor:
    """Unit-norm embeddings of a store's `rows` (in order) by `encode` (an Adaptor's encode_image or encode_text)."""
    parts = []
    for features, mask in reader.chunks(rows, chunk_rows):
        with autocast(device):
            parts.append(encode(features.to(device), None if mask is None else mask.to(device)).float())
    return torch.cat(parts)
