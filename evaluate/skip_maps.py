"""The ResNet-AE U-Net's inputs from a store extracted with `--feature-maps`, read a batch at a time.

The published U-Net (models/seg_models.py ResNetAEUNet) reads two things per image: the Adaptor's
embedding of the pooled code and the encoder's four intermediate maps. Here both come from the
cache: the pooled embedding (raw, the baseline; or through the trained Adaptor's image path, per
image, never across a batch) is small and held in memory, while the maps (4.2 MiB per image at
224 px, 67 MiB at 896 px) stay in the store and are read only for the rows of each batch, unless
all of them fit in `MAPS_IN_MEMORY_BYTES` (the demo's), when they are read once.

`SkipMapRows` therefore stands where a decoder's input tensor stands in a training loop: it has a
length, takes an index tensor or slice (`rows[batch]`), splits into batches (`split`), and
`UNetSegmenter` reads the maps of exactly the rows it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from adaptor_vlp.cache_schema import ArrayName, CacheStore, StoreError
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from adaptor_vlp.evaluate.early_stopping import predict_in_batches, seeded_torch
from adaptor_vlp.evaluate.features import AdaptorRun, DatasetRows, adaptor_embeddings
from adaptor_vlp.evaluate.segmentation_loss import loss_function
from adaptor_vlp.evaluate.segmentation_protocol import SegmentationProtocol
from adaptor_vlp.evaluate.segmentation_training import SegmentationTraining, train_segmenter
from adaptor_vlp.evaluate.unet_decoder import UNetDecoder, UNetGeometry


class MissingFeatureMaps(StoreError):
    """The U-Net was asked to read a store that holds no intermediate maps (or maps of another input size)."""


MAPS_IN_MEMORY_BYTES = 2**30
"""Rows whose maps take at most this much are read once into memory (the demo's); larger sets stream per batch."""


@dataclass(frozen=True)
class SkipMapRows:
    """Some rows of a store: their pooled embeddings (in memory) and their four maps, in memory (`held`, aligned
    with `store_rows`) or read from the store on demand."""

    store: CacheStore
    store_rows: np.ndarray
    pooled: torch.Tensor
    held: tuple[torch.Tensor, ...] | None = None

    def __len__(self) -> int:
        return len(self.store_rows)

    def __getitem__(self, rows: torch.Tensor | slice | np.ndarray) -> SkipMapRows:
        index = rows.numpy() if isinstance(rows, torch.Tensor) else rows
        positions = torch.as_tensor(np.arange(len(self))[index])
        held = None if self.held is None else tuple(level[positions] for level in self.held)
        return SkipMapRows(self.store, self.store_rows[index], self.pooled[positions], held)

    def split(self, batch_size: int) -> Iterator[SkipMapRows]:
        """Consecutive batches of at most `batch_size` rows, as `torch.Tensor.split` gives them."""
        return (self[start:start + batch_size] for start in range(0, len(self), batch_size))

    def maps(self) -> list[torch.Tensor]:
        """The rows' four maps, finest first, as float16 tensors (widened by the decoder)."""
        if self.held is not None:
            return list(self.held)
        return [torch.from_numpy(self.store.read(name, self.store_rows)) for name in FEATURE_MAP_ARRAYS]

    def covering_rows(self) -> slice:
        """The store rows from the first to the last of these rows."""
        return slice(int(self.store_rows.min()), int(self.store_rows.max()) + 1) if len(self) else slice(0, 0)

    def in_memory(self) -> SkipMapRows:
        """The same rows with their maps read once, as one range read (zarr reads a range chunk by chunk, but an
        index list far more slowly), then picked out in memory."""
        covering = self.covering_rows()
        held = tuple(torch.from_numpy(self.store.read(name, covering)[self.store_rows - covering.start])
                     for name in FEATURE_MAP_ARRAYS)
        return SkipMapRows(self.store, self.store_rows, self.pooled, held)


def skip_map_rows(rows: DatasetRows, positions: np.ndarray, adaptor: AdaptorRun | None = None,
                  device: str = "cpu") -> SkipMapRows:
    """The U-Net's inputs for `rows` at `positions`: the store's pooled embeddings, or the Adaptor's of them."""
    store = rows.store
    require_feature_maps(store)
    store_rows = rows.rows[positions]
    if adaptor is None:
        pooled = store.read(ArrayName.EMBEDDING, store_rows).astype(np.float32)
    else:
        pooled = adaptor_embeddings(store, store_rows, adaptor, device)
    rows_of = SkipMapRows(store, store_rows, torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32)))
    row_bytes = 2 * sum(int(np.prod(level)) for level in store.features.feature_maps)
    covering = rows_of.covering_rows()
    return rows_of.in_memory() if row_bytes * (covering.stop - covering.start) <= MAPS_IN_MEMORY_BYTES else rows_of


def require_feature_maps(store: CacheStore) -> None:
    """MissingFeatureMaps, saying how to extract them, unless the store holds the four maps."""
    if not all(store.has(name) for name in FEATURE_MAP_ARRAYS):
        provenance, size = store.provenance, store.segmentation_size
        raise MissingFeatureMaps(
            f"{store.path} holds no intermediate feature maps, which the U-Net decoder reads as skip connections; "
            f"extract them with `adaptor extract images --backbone {provenance.backbone} "
            f"--dataset {provenance.dataset}{'' if size is None else f' --segmentation-size {size}'} --feature-maps "
            "--overwrite` (a CNN backbone such as resnet-ae)")


def unet_geometry(store: CacheStore, embedding_dim: int) -> UNetGeometry:
    """The U-Net for this store's maps and input size, reading `embedding_dim`-wide pooled embeddings."""
    require_feature_maps(store)
    size = store.provenance.preprocessing.get("image_size")
    if not isinstance(size, int):
        raise MissingFeatureMaps(f"{store.path} records no input image size (preprocessing.image_size); "
                                 "re-extract it")
    levels = store.features.feature_maps
    geometry = UNetGeometry(embedding_dim, tuple(channels for channels, _, _ in levels), size)
    sides = tuple(height for _, height, _ in levels)
    if sides != geometry.skip_sides():
        raise MissingFeatureMaps(f"{store.path}: its maps are {sides} pixels high; a {size} px input's U-Net reads "
                                 f"maps of {geometry.skip_sides()} (1/2 .. 1/16 of the input)")
    return geometry


class UNetSegmenter(nn.Module):
    """The U-Net decoder on `SkipMapRows`: reads each batch's maps from the store, returns (B, S, S) logits.

    `out_size` other than the input side resizes the logits bilinearly (masks scored at another size).
    """

    def __init__(self, geometry: UNetGeometry, out_size: int | None = None) -> None:
        super().__init__()
        self.decoder = UNetDecoder(geometry)
        self.out_size = out_size or geometry.input_size

    def forward(self, rows: SkipMapRows) -> torch.Tensor:
        logits = self.decoder(rows.pooled, rows.maps())
        if logits.shape[-1] == self.out_size:
            return logits
        return functional.interpolate(logits[:, None], size=(self.out_size,) * 2, mode="bilinear",
                                      align_corners=False)[:, 0]


@dataclass(frozen=True)
class FittedUNet:
    """A trained U-Net, the mask size it predicts and which epoch's weights it kept."""

    segmenter: UNetSegmenter
    training: SegmentationTraining
    batch_size: int

    def predict_masks(self, rows: SkipMapRows, threshold: float = 0.5) -> np.ndarray:
        """(N, S, S) boolean masks: pixels whose probability is above `threshold`, as the token decoders'."""
        return (torch.sigmoid(predict_in_batches(self.segmenter, rows, self.batch_size)) > threshold).numpy()


def fit_unet_segmenter(train_views: Sequence[SkipMapRows], train_masks: Sequence[np.ndarray], val: SkipMapRows,
                       val_masks: np.ndarray, geometry: UNetGeometry, out_size: int, seed: int,
                       protocol: SegmentationProtocol) -> FittedUNet:
    """Trains the U-Net on view k's rows and (N, out_size, out_size) masks at the epochs that read view k (one view:
    the unwarped store), keeping the best validated weights.

    The same loop as the token decoders (`segmentation_training.train_segmenter`): the protocol's loss, AdamW,
    batch size, cosine schedule, validation interval, selection metric and patience.
    """
    with seeded_torch(seed):
        segmenter = UNetSegmenter(geometry, out_size)
        training = train_segmenter(segmenter, loss_function(protocol.loss), train_views=list(train_views),
                                   train_masks=[torch.from_numpy(np.ascontiguousarray(masks, dtype=bool))
                                                for masks in train_masks],
                                   val=(val, torch.from_numpy(np.ascontiguousarray(val_masks, dtype=bool))),
                                   protocol=protocol, seed=seed)
    return FittedUNet(segmenter, training, protocol.batch_size)
