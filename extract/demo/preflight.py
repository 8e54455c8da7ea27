"""The checks every demo tree writer makes before it writes anything: an empty folder, enough images."""
from __future__ import annotations

from pathlib import Path


def check_empty_folder(out: Path) -> None:
    """Raises FileExistsError unless `out` is absent or empty, so a demo tree never lands among other files."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write the demo dataset into a new or empty folder")


def check_image_count(dataset: str, images: int, minimum: int) -> None:
    """Raises ValueError when a demo `dataset` tree of `images` images would be below its `minimum`."""
    if images < minimum:
        raise ValueError(f"the {dataset} demo needs at least {minimum} images, got {images}")
