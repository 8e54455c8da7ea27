"""Training and validation inputs from two paired stores: subsets, epoch shuffles, views, token streaming.

Every random choice of an epoch (which cached view each image shows, the order of the pairs) is
drawn from a generator seeded by (seed, epoch), so an epoch's batches are a pure function of the
recipe and the data: a resumed run sees exactly the batches an uninterrupted one would.

Pooled inputs are held in memory (all of MIMIC-CXR at 768-d is under a gigabyte). Token inputs
are streamed: an epoch visits the image store's shards in a shuffled order, a window of a few
shards at a time, reads those images' tokens and their studies' text tokens once, and draws its
batches from the pairs in memory (pairs left over at a window's end join the next window).
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from adaptor_vlp.cache_schema import ArrayName, CacheStore, StoreError, require_finite
from adaptor_vlp.train.model import AdaptorInputs
from adaptor_vlp.train.pairs import PairingError, SplitPairs, StorePairing, load_pooled
from adaptor_vlp.train.recipe import Recipe

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validate"
DATA_SETTINGS = ("data_pct", "subset_seed", "use_views", "inputs")
"""Recipe settings that decide which pairs and features a run loads (the seed only orders its batches)."""


@dataclass(frozen=True)
class DataSubset:
    """The training pairs a run used: the share asked for, its seed, and a fingerprint of the chosen image ids."""

    data_pct: float
    seed: int
    n_available: int
    n_chosen: int
    ids_sha256: str

    def to_json(self) -> dict[str, float | int | str]:
        return {"data_pct": self.data_pct, "seed": self.seed, "n_available": self.n_available,
                "n_chosen": self.n_chosen, "ids_sha256": self.ids_sha256}


@dataclass(frozen=True)
class PairBatch:
    """Row i of `image` pairs with row i of `text`; masks (True = real token) only for token inputs."""

    image: Tensor
    text: Tensor
    image_mask: Tensor | None = None
    text_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def select(self, index: Tensor | slice) -> PairBatch:
        """The pairs at `index`, in that order."""
        return PairBatch(*(None if part is None else part[index] for part in self._parts()))

    def concat(self, other: PairBatch) -> PairBatch:
        """This batch's pairs followed by `other`'s."""
        return PairBatch(*(None if mine is None else torch.cat([mine, theirs])
                           for mine, theirs in zip(self._parts(), other._parts())))

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(None if part is None else part.to(device) for part in self._parts()))

    def _parts(self) -> tuple[Tensor | None, ...]:
        return self.image, self.text, self.image_mask, self.text_mask


def choose_subset(n_pairs: int, data_pct: float, seed: int) -> np.ndarray:
    """Sorted positions of the `data_pct` percent of `n_pairs` kept (at least one).

    One seed's smaller shares lie within its larger ones: 1% is part of 10%, which is part of 100%.
    """
    n_chosen = max(1, math.ceil(n_pairs * data_pct / 100))
    return np.sort(np.random.default_rng(seed).permutation(n_pairs)[:n_chosen])


def steps_per_epoch(n_pairs: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder of the shuffled pairs is left for the next epoch's draw).

    Fewer pairs than one batch make a single batch of all of them.
    """
    return max(1, n_pairs // batch_size)


class FeatureReader:
    """One store's Adaptor inputs by row: pooled vectors from memory, or token sequences read on demand.

    Cached augmented views are pooled vectors, so they are sampled only for pooled inputs; token
    inputs always use the plain image's tokens.
    """

    def __init__(self, store: CacheStore, inputs: AdaptorInputs, use_views: bool = False) -> None:
        self.store = store
        self.inputs = inputs
        self._pooled: np.ndarray | None = None
        self._views: np.ndarray | None = None
        if inputs is AdaptorInputs.POOLED:
            self._pooled = load_pooled(store)
            if use_views and store.has(ArrayName.VIEWS):
                self._views = load_pooled(store, ArrayName.VIEWS)
        elif not store.has(ArrayName.TOKENS):
            raise StoreError(f"{store.path}: holds no token embeddings; extract it with --tokens "
                             "or train with --inputs pooled")

    @property
    def dim(self) -> int:
        """Width of one input vector."""
        features = self.store.features
        return features.embedding_dim if self.inputs is AdaptorInputs.POOLED else features.token_dim

    @property
    def view_count(self) -> int:
        """Augmented views available for sampling (0 when none are used)."""
        return 0 if self._views is None else self._views.shape[1]

    def check_finite(self, rows: np.ndarray) -> None:
        """Refuses NaN or infinite pooled inputs in the given rows, naming the first such sample."""
        if self._pooled is None:
            return
        require_finite(self.store, rows, self._pooled[rows], *([] if self._views is None else [self._views[rows]]))

    def read(self, rows: np.ndarray, views: np.ndarray | None = None) -> tuple[Tensor, Tensor | None]:
        """Features (and token mask) of `rows`; `views[i]` picks row i's input: 0 = plain, k = cached view k."""
        if self._pooled is None:
            unique, inverse = np.unique(rows, return_inverse=True)
            tokens = self.store.read(ArrayName.TOKENS, unique)[inverse]
            mask = self.store.read(ArrayName.TOKEN_MASK, unique)[inverse]
            return torch.from_numpy(tokens.astype(np.float32)), torch.from_numpy(mask)
        features = self._pooled[rows]
        if views is not None and self._views is not None:
            chosen = views > 0
            features[chosen] = self._views[rows[chosen], views[chosen] - 1]
        return torch.from_numpy(features), None

    def chunks(self, rows: np.ndarray, chunk_rows: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Plain inputs of `rows` in order, `chunk_rows` at a time (sorted rows read few shards per chunk)."""
        for start in range(0, len(rows), chunk_rows):
            yield self.read(rows[start:start + chunk_rows])


class PairedData:
    """A run's training subset and validation split of two paired stores, and its epoch batches."""

    def __init__(self, pairing: StorePairing, recipe: Recipe, image: FeatureReader | None = None) -> None:
        """`image`: the image store's reader when another run's data holds it already (its `image`, loaded once)."""
        for split in (TRAIN_SPLIT, VALIDATION_SPLIT):
            if len(pairing.splits.get(split, ())) < 2:
                raise PairingError(f"{pairing.image_store.path} and {pairing.text_store.path} share fewer than 2 "
                                   f"'{split}' pairs; training needs both a train and a validate split")
        self.recipe = recipe
        if image is not None and (image.store.path != pairing.image_store.path or image.inputs is not recipe.inputs):
            raise ValueError(f"the image reader of {image.store.path} ({image.inputs.value}) cannot serve "
                             f"{pairing.image_store.path} ({recipe.inputs.value})")
        self.image = image or FeatureReader(pairing.image_store, recipe.inputs, recipe.use_views)
        self.text = FeatureReader(pairing.text_store, recipe.inputs)
        available = pairing.splits[TRAIN_SPLIT]
        chosen = choose_subset(len(available), recipe.data_pct, recipe.subset_seed)
        if len(chosen) < 2:
            raise PairingError(f"--data-pct {recipe.data_pct} keeps {len(chosen)} of {len(available)} training "
                               "pairs; a contrastive batch needs at least 2")
        self.train = SplitPairs(available.image_rows[chosen], available.text_rows[chosen])
        self.validate = pairing.splits[VALIDATION_SPLIT]
        self.chosen_image_ids: list[str] = [str(i) for i in pairing.image_store.ids[self.train.image_rows]]
        self.subset = DataSubset(
            data_pct=recipe.data_pct,
            seed=recipe.subset_seed,
            n_available=len(available),
            n_chosen=len(chosen),
            ids_sha256=hashlib.sha256("\n".join(self.chosen_image_ids).encode()).hexdigest(),
        )
        for reader, rows in ((self.image, self.train.image_rows), (self.image, self.validate.image_rows),
                             (self.text, self.train.text_rows), (self.text, self.validate.text_rows)):
            reader.check_finite(rows)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train), self.recipe.batch_size)

    def with_recipe(self, recipe: Recipe) -> PairedData:
        """These pairs and loaded features under another recipe that selects the same data (its own batches).

        Raises ValueError naming the first setting that would select other data.
        """
        for name in DATA_SETTINGS:
            if getattr(recipe, name) != getattr(self.recipe, name):
                raise ValueError(f"{name}={getattr(recipe, name)!r} selects other data than "
                                 f"{getattr(self.recipe, name)!r}")
        twin = copy.copy(self)
        twin.recipe = recipe
        return twin

    def epoch_batches(self, epoch: int) -> Iterator[PairBatch]:
        """The `steps_per_epoch` training batches of one epoch, fresh but reproducible from (seed, epoch)."""
        batch_size = self.recipe.batch_size
        rng = np.random.default_rng([self.recipe.seed, epoch])
        views = rng.integers(0, self.image.view_count + 1, size=len(self.train))
        pending: PairBatch | None = None
        emitted = 0
        for window in self._windows(rng):
            loaded = self._load(window, views[window])
            if pending is not None:
                loaded = pending.concat(loaded)
            loaded = loaded.select(torch.from_numpy(rng.permutation(len(loaded))))
            n_full = len(loaded) // batch_size
            for start in range(0, n_full * batch_size, batch_size):
                yield loaded.select(slice(start, start + batch_size))
            emitted += n_full
            pending = loaded.select(slice(n_full * batch_size, len(loaded)))
        if emitted == 0 and pending is not None:
            yield pending

    def _windows(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Positions of training pairs loaded together: one batch's worth (pooled) or a few image shards (tokens)."""
        if self.recipe.inputs is AdaptorInputs.POOLED:
            order = rng.permutation(len(self.train))
            for start in range(0, len(order), self.recipe.batch_size):
                yield order[start:start + self.recipe.batch_size]
            return
        shard_of_pair = self.train.image_rows // self.image.store.shard_rows
        shards = rng.permutation(np.unique(shard_of_pair))
        for start in range(0, len(shards), self.recipe.token_window_shards):
            yield np.flatnonzero(np.isin(shard_of_pair, shards[start:start + self.recipe.token_window_shards]))

    def _load(self, positions: np.ndarray, views: np.ndarray) -> PairBatch:
        image, image_mask = self.image.read(self.train.image_rows[positions], views)
        text, text_mask = self.text.read(self.train.text_rows[positions])
        return PairBatch(image, text, image_mask, text_mask)
