"""Names, dimensions and paths of the on-disk cache: the one place that spells them."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

SCHEMA_VERSION = 1
"""Bumped whenever the layout changes in a way an older reader would misread."""

ATTRIBUTE_NAMESPACE = "adaptor_vlp"
"""Key of the single block this project writes into the group's attributes."""

MARKER_FOLDER = "_shards"
"""Folder inside a store holding one JSON completion marker per finished shard."""

STORE_SUFFIX = ".zarr"


class Modality(str, Enum):
    """What a store's rows are: images (one row per image) or texts (one row per study report)."""

    IMAGE = "image"
    TEXT = "text"


class ArrayName(str, Enum):
    """Arrays a store may hold; ids, split and validity are always present."""

    ID = "id"
    GROUP_ID = "group_id"
    SPLIT = "split"
    VALID = "valid"
    EMBEDDING = "embedding"
    TOKENS = "tokens"
    TOKEN_MASK = "token_mask"
    VIEWS = "views"
    FEATURE_MAP_1 = "feature_map_1"
    FEATURE_MAP_2 = "feature_map_2"
    FEATURE_MAP_3 = "feature_map_3"
    FEATURE_MAP_4 = "feature_map_4"


FEATURE_MAP_ARRAYS = (ArrayName.FEATURE_MAP_1, ArrayName.FEATURE_MAP_2, ArrayName.FEATURE_MAP_3,
                      ArrayName.FEATURE_MAP_4)
"""Optional (sample, channel, height, width) maps of a CNN backbone at 1/2, 1/4, 1/8 and 1/16 of its input,
the skip connections of the published ResNet-AE U-Net; compressed, one inner chunk per sample."""


DIMENSION_NAMES: dict[ArrayName, tuple[str, ...]] = {
    ArrayName.ID: ("sample", "id_byte"),
    ArrayName.GROUP_ID: ("sample", "id_byte"),
    ArrayName.SPLIT: ("sample",),
    ArrayName.VALID: ("sample",),
    ArrayName.EMBEDDING: ("sample", "feature"),
    ArrayName.TOKENS: ("sample", "token", "feature"),
    ArrayName.TOKEN_MASK: ("sample", "token"),
    ArrayName.VIEWS: ("sample", "view", "feature"),
    **{name: ("sample", "channel", "height", "width") for name in FEATURE_MAP_ARRAYS},
}

FEATURE_ARRAYS = (ArrayName.EMBEDDING, ArrayName.TOKENS, ArrayName.VIEWS, *FEATURE_MAP_ARRAYS)
"""Float16 arrays written per shard by a backbone; failed rows hold NaN."""

SPLIT_NAMES = ("train", "validate", "test")

DEFAULT_SHARD_BYTES = 128 * 2**20
"""Target size of one shard of the largest array: big enough to amortise a file, small enough for one task's memory."""

DEFAULT_CHUNK_BYTES = 2 * 2**20
"""Target size of an inner chunk: the smallest piece a random-access read decodes."""


PER_SHARD_ARRAYS = (ArrayName.VALID, *FEATURE_ARRAYS, ArrayName.TOKEN_MASK)
"""Arrays written with each shard (rewritten when a shard is redone); the row metadata is written once."""


def shard_key(name: ArrayName, index: int) -> str:
    """The object holding shard `index` of an array, relative to the store: `<array>/c/<index>/0...`.

    Every array is sharded by rows only, so the key has a 0 for each further dimension (Zarr v3's
    default chunk key encoding with "/" separators).
    """
    name = ArrayName(name)
    return "/".join([name.value, "c", str(index), *("0" for _ in DIMENSION_NAMES[name][1:])])


def store_path(cache_dir: Path, dataset: str, modality: Modality, backbone: str) -> Path:
    """Where the store for one (dataset, modality, backbone) lives under a cache folder.

    A backbone named by hub id (`hf:org/model`) keeps its store in one folder: '/' becomes '--'.
    """
    return Path(cache_dir) / dataset / Modality(modality).value / f"{backbone.replace('/', '--')}{STORE_SUFFIX}"


def segmentation_store_path(cache_dir: Path, dataset: str, backbone: str, size: int, view: int = 0) -> Path:
    """Where a segmentation task's image store lives: `<backbone>.seg<size>.zarr` beside the plain store, and
    augmented view k (1, 2, ...) in `<backbone>.seg<size>.view<k>.zarr`.

    The plain store holds the backbone's own input frame (its classification steps); a segmentation store
    holds the whole image resized to `size` (`adaptor extract images --segmentation-size`). Naming both by
    size lets one dataset serve a classification task and segmentation tasks at several sizes, one store
    each, every one written, verified and resumed like any other.
    """
    if size < 1:
        raise ValueError(f"a segmentation store's image size is a positive number of pixels, got {size}")
    if view < 0:
        raise ValueError(f"segmentation views are numbered from 1 (0 is the unwarped store), got {view}")
    suffix = f".seg{size}" + (f".view{view}" if view else "")
    return store_path(cache_dir, dataset, Modality.IMAGE, f"{backbone}{suffix}")


def dataset_dir(cache_dir: Path, dataset: str) -> Path:
    """The folder of one dataset in a cache: its manifest and its stores."""
    return Path(cache_dir) / dataset
