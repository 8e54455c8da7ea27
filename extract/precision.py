"""The arithmetic a frozen backbone runs in: a recorded choice, since it changes the stored bytes."""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Precision(str, Enum):
    """The arithmetic of the frozen forward pass (the store keeps float16 whatever it is)."""

    AUTO = "auto"
    """bfloat16 on CUDA, float32 elsewhere."""
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    """bf16 autocast: fast on GPUs and on CPUs with AMX or AVX512-BF16, slow on other CPUs."""

    def on(self, device: torch.device) -> Precision:
        """The precision this choice means on `device` (AUTO resolved)."""
        if self is not Precision.AUTO:
            return self
        return Precision.BFLOAT16 if device.type == "cuda" else Precision.FLOAT32
