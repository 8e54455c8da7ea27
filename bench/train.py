"""Adaptor training from the cache against the same training with the frozen backbones run live, and sweep cost.

`python -m bench.train [--quick] [--pairs N] [--batch-size B] [--rounds R] [--steps S] [--device cpu|cuda]`
prints, in one run:

1. Seconds per epoch on the same N pairs, in interleaved rounds (best and median): live, the way
   the published code trains (decode the JPEG, preprocess, ViT-S/14 forward, BERT-base forward,
   then the Adaptor step), against the cache (the pooled embeddings those very forwards produced,
   written to and loaded from cache stores, then the same Adaptor step). Both sides run the train
   loop's own epoch function with the paper's Adaptor; only where the batches come from differs.
   The backbones are real-size with seeded random weights: their cost, not their quality, counts.
2. Cache-read throughput against a raw read of the store's own shard bytes (`bench.cache_formats`).
3. Sweep cost: one whole training run from the cache and the same run with the backbones live,
   and sweep points per hour, for (a) a demo-sized cache with the DEMO recipe (real runs,
   measured) and (b) a MIMIC-CXR-sized pooled cache (377,110 images, 227,835 studies, 768-d,
   synthetic values) with the paper's recipe (rounds of steps and a real two-epoch run of one
   step per epoch measured, the 50-epoch run extrapolated from them). Live runs are extrapolated
   from the per-pair backbone cost measured in 1.

What each figure measured and what it extrapolated is printed next to it. Derived figures use
each contender's best round (`bench.common`'s convention on this shared machine); medians show
the spread. The live side decodes JPEGs at reduced DCT scale, as the extract stage does, which is
cheaper than the published code's full decode: the live figures are a lower bound.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import typer

import bench.cache_formats as cache_formats
from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance, dataset_dir, store_path
from adaptor_vlp.cache_schema.manifest import read_manifest
from adaptor_vlp.extract.backbones import MINILM_NAME, BackboneSpec, RandomTextConfig, get_spec
from adaptor_vlp.extract.datasets.report_sections import report_text
from adaptor_vlp.extract.demo.findings import sample_findings, sample_traits
from adaptor_vlp.extract.demo.reports import ReportForm, StudyContext, write_report
from adaptor_vlp.extract.encoders import ImageEncoder, TextEncoder, load_image_encoder, load_text_encoder
from adaptor_vlp.extract.sources import ImageRows, collate_images
from adaptor_vlp.train.batches import TRAIN_SPLIT, VALIDATION_SPLIT, PairBatch, PairedData, steps_per_epoch
from adaptor_vlp.train.loop import TrainResult, adamw, linear_warmup_decay, train_adaptor, train_epoch
from adaptor_vlp.train.model import Adaptor, AdaptorConfig, count_trainable_parameters
from adaptor_vlp.train.pairs import pair_stores
from adaptor_vlp.train.recipe import DEMO, PAPER, Recipe
from bench.common import Ratio, best_seconds, describe_machine, timed
from bench.extract import DATASET as IMAGE_SET_DATASET
from bench.extract import Device, write_image_set

RANDOM_INIT_SEED = 0
BERT_BASE = RandomTextConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                             vocab_size=30522, max_position_embeddings=512)
"""bert-base-uncased's architecture (110 M parameters); MiniLM's tokenizer has the same 30,522-word vocabulary."""
EPOCH_GOAL = 100.0
"""Goal: an epoch from the cache at least this many times faster than with the backbones live."""
MIMIC_IMAGES = 377_110
MIMIC_STUDIES = 227_835
DEMO_SPLIT_SHARES = {"train": 155, "validate": 28, "test": 17}
"""Train and validate pairs as in the bundled demo cache (60 subjects); test rows make up ~200 pairs."""
SECONDS_PER_HOUR = 3600.0
SYNTHETIC_DATASET = "bench-synthetic"
SYNTHETIC_BLOCK_ROWS = 4096
"""Distinct random rows per synthetic store; larger stores repeat them."""
SCHEDULE_STEPS = 100_000
"""Length of the benchmark optimisers' warm-up/decay schedule: longer than any run here, so the rate never reaches 0."""


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes; `--quick` picks tiny backbones and small caches."""

    image_spec: BackboneSpec
    text_spec: BackboneSpec
    pairs: int
    batch_size: int
    rounds: int
    cache_epochs: int
    """Epochs per cache-side round (one cache epoch of a few pairs is too short to time alone)."""
    jpeg_width: int
    jpeg_height: int
    jpeg_noise: float
    scale_images: int
    scale_studies: int
    scale_dim: int
    scale_batch_size: int
    steps: int
    """Adaptor steps timed on the MIMIC-CXR-sized cache, split over the rounds."""
    demo_pairs: int
    demo_epochs: int
    formats: cache_formats.Settings
    device: Device
    adaptor_shape: Mapping[str, int]
    """Recipe overrides of the Adaptor's shape for parts 1 and 3b; empty = the paper's Adaptor."""

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        return (f"python -m bench.train{' --quick' if quick else ''} --pairs {self.pairs} --batch-size "
                f"{self.batch_size} --rounds {self.rounds} --steps {self.steps} --device {self.device.value}")


def real_size_text_spec() -> BackboneSpec:
    """BERT-base with seeded random weights, pooler output (as the paper reads BERT), MiniLM's tokenizer."""
    return dataclasses.replace(get_spec("bert"), name="bert-base-random", model_id="bert",
                               random_init_seed=RANDOM_INIT_SEED, tokenizer_backbone=MINILM_NAME,
                               random_text_config=BERT_BASE)


FULL = Settings(
    image_spec=dataclasses.replace(get_spec("dinov2-s"), random_init_seed=RANDOM_INIT_SEED),
    text_spec=real_size_text_spec(), pairs=128, batch_size=128, rounds=3, cache_epochs=10,
    jpeg_width=2544, jpeg_height=3056, jpeg_noise=3.0,
    scale_images=MIMIC_IMAGES, scale_studies=MIMIC_STUDIES, scale_dim=768, scale_batch_size=PAPER.batch_size,
    steps=90, demo_pairs=sum(DEMO_SPLIT_SHARES.values()), demo_epochs=DEMO.epochs,
    formats=dataclasses.replace(cache_formats.FULL, rounds=3), device=Device.CPU, adaptor_shape={},
)
QUICK = dataclasses.replace(
    FULL, image_spec=get_spec("tiny-vit"), text_spec=get_spec("tiny-bert"), pairs=8, batch_size=4, rounds=1,
    cache_epochs=2, jpeg_width=640, jpeg_height=768, scale_images=6000, scale_studies=3600, scale_dim=64,
    scale_batch_size=64, steps=2, demo_epochs=2, formats=cache_formats.QUICK,
    adaptor_shape={"projection_dim": 64, "num_layers": 1, "num_heads": 4, "ffn_dim": 128},
)


@dataclass(frozen=True)
class Timings:
    """One contender's seconds in each round."""

    seconds: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def scaled(self, factor: float) -> Timings:
        return Timings(tuple(s * factor for s in self.seconds))

    def text(self, unit: str = "s", factor: float = 1.0) -> str:
        """`best X, median Y` in `unit` (seconds times `factor`), over the rounds."""
        return (f"best {self.best * factor:.4g} {unit}, median {self.median * factor:.4g} {unit} "
                f"({_count(len(self.seconds), 'round')})")


def interleaved_timings(contenders: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, Timings]:
    """Every round's seconds of each contender, run in interleaved rounds by `bench.common.best_seconds`."""
    recorded: dict[str, list[float]] = {name: [] for name in contenders}

    def recording(name: str, contender: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            recorded[name].append(contender())
            return recorded[name][-1]
        return run

    best_seconds({name: recording(name, contender) for name, contender in contenders.items()}, rounds)
    return {name: Timings(tuple(seconds)) for name, seconds in recorded.items()}


def report_texts(count: int, seed: int = 0) -> list[str]:
    """FINDINGS + IMPRESSION of `count` demo reports, the text the paper feeds its text backbone."""
    rng = np.random.default_rng(seed)
    context = StudyContext(examination="CHEST (PA AND LAT)", technique="PA and lateral views of the chest.",
                           has_prior=False)
    return [report_text(write_report(sample_findings(rng, sample_traits(rng), portable=False), context,
                                     ReportForm.FULL, rng).text).text
            for _ in range(count)]


class LivePairs:
    """Training batches computed the published code's way: every epoch decodes, preprocesses and runs the backbones.

    It offers what the train loop's epoch function reads from its data (`recipe`, `epoch_batches`),
    with PairedData's (seed, epoch) shuffle and full batches, and keeps the pooled embeddings it
    computes so that the cache side can be built from exactly the same forwards.
    """

    def __init__(self, images: ImageRows, texts: list[str], image_encoder: ImageEncoder, text_encoder: TextEncoder,
                 recipe: Recipe) -> None:
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts; live pairs align row by row")
        self.images = images
        self.texts = texts
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.recipe = recipe
        self.image_embeddings = np.full((len(texts), image_encoder.dim), np.nan, dtype=np.float32)
        self.text_embeddings = np.full((len(texts), text_encoder.dim), np.nan, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def epoch_batches(self, epoch: int) -> Iterator[PairBatch]:
        order = np.random.default_rng([self.recipe.seed, epoch]).permutation(len(self))
        batch_size = self.recipe.batch_size
        for start in range(0, steps_per_epoch(len(self), batch_size) * batch_size, batch_size):
            yield self.embed(order[start:start + batch_size])

    def embed(self, positions: np.ndarray) -> PairBatch:
        """Decode + preprocess the images (the extract stage's reader), run both frozen backbones.

        The batch is a copy of the embeddings: the encoders' outputs are inference-mode tensors,
        which autograd refuses to save for the Adaptor's backward pass.
        """
        batch = collate_images([self.images[int(p)] for p in positions])
        if batch.failures:
            raise RuntimeError(f"benchmark images did not decode: {next(iter(batch.failures.values()))}")
        image = self.image_encoder.encode(batch.pixels).pooled
        text = self.text_encoder.encode([self.texts[int(p)] for p in positions]).pooled
        self.image_embeddings[positions] = image.numpy()
        self.text_embeddings[positions] = text.numpy()
        return PairBatch(torch.from_numpy(self.image_embeddings[positions]),
                         torch.from_numpy(self.text_embeddings[positions]))


@dataclass(frozen=True)
class EpochFigures:
    """Part 1: per-epoch seconds on the same pairs, live and from the cache."""

    pairs: int
    recipe: Recipe
    live: Timings
    cache: Timings
    cache_load_seconds: float
    image_parameters: int
    text_parameters: int
    adaptor_parameters: int

    @property
    def backbone_seconds_per_pair(self) -> float:
        """What the live side adds per pair: decode, preprocess and both forwards (best rounds)."""
        return (self.live.best - self.cache.best) / self.pairs

    def ratio(self) -> Ratio:
        return Ratio(f"live epoch / cache epoch (same {self.pairs} pairs, batch {self.recipe.batch_size}, measured, "
                     "best rounds)", self.live.best / self.cache.best, goal=EPOCH_GOAL, unit="x")

    def lines(self, settings: Settings) -> list[str]:
        per_pair = 1e3 / self.pairs
        steps = steps_per_epoch(self.pairs, self.recipe.batch_size)
        return [
            f"1. epoch on the same {self.pairs} pairs, batch {self.recipe.batch_size} ({_count(steps, 'step')}), "
            f"{_adaptor_text(self.recipe, self.adaptor_parameters)}; backbones {settings.image_spec.name} "
            f"({self.image_parameters / 1e6:.1f} M, {settings.image_spec.image_size} px) + "
            f"{settings.text_spec.name} ({self.text_parameters / 1e6:.1f} M, {settings.text_spec.max_length} "
            f"tokens), seeded random weights",
            f"   live  (decode JPEG at reduced DCT scale + preprocess + image forward + text forward + Adaptor step): "
            f"{self.live.text()} = {self.live.best * per_pair:.2f} ms/pair at best (measured)",
            f"   cache (pooled embeddings from the store, in memory + Adaptor step): "
            f"{self.cache.text()} = {self.cache.best * per_pair:.3f} ms/pair at best (measured, mean of "
            f"{settings.cache_epochs} epochs per round)",
            f"   cache load once per run (open both stores, read the pooled arrays, join by id): "
            f"{self.cache_load_seconds:.3f} s; backbones live add {self.backbone_seconds_per_pair * 1e3:.2f} ms/pair; "
            f"medians give {self.live.median / self.cache.median:.0f}x",
            self.ratio().line(),
        ]


class EpochBenchmark:
    """Part 1's contenders: one epoch over the same pairs, live and from cache stores built from the live forwards."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.device = torch.device(settings.device.value)
        self.recipe = PAPER.with_overrides({**settings.adaptor_shape, "batch_size": settings.batch_size})
        image_set = write_image_set(folder / "images", settings.pairs, settings.jpeg_width, settings.jpeg_height,
                                    settings.jpeg_noise)
        rows = read_manifest(dataset_dir(image_set.cache_dir, IMAGE_SET_DATASET)).rows
        self.image_encoder = load_image_encoder(settings.image_spec, device=self.device)
        self.text_encoder = load_text_encoder(settings.text_spec, device=self.device)
        self.live = LivePairs(ImageRows(rows, image_set.image_root, settings.image_spec, views=0),
                              report_texts(settings.pairs), self.image_encoder, self.text_encoder, self.recipe)
        config = self.recipe.adaptor_config(self.image_encoder.dim, self.text_encoder.dim)
        self.live_trainer = _Trainer(config, self.recipe, self.device)
        self.cache_trainer = _Trainer(config, self.recipe, self.device)
        self.cache_load_seconds = 0.0
        self._epochs = itertools.count(1)

    def warm_up(self) -> None:
        """One live batch, so that neither backbone's first-call set-up lands in a timed round."""
        self.live.embed(np.arange(min(self.settings.batch_size, len(self.live))))

    def live_epoch_seconds(self) -> float:
        return timed(lambda: self.live_trainer.epoch(self.live, next(self._epochs)))

    def cache_epoch_seconds(self) -> float:
        """Seconds per epoch from the cache: the mean of `cache_epochs` epochs, after a whole live epoch."""
        data = self._cached_data
        epochs = [next(self._epochs) for _ in range(self.settings.cache_epochs)]
        return timed(lambda: [self.cache_trainer.epoch(data, epoch) for epoch in epochs]) / len(epochs)

    @functools.cached_property
    def _cached_data(self) -> PairedData:
        """Stores of the live side's embeddings, loaded as training loads them, then one untimed warm-up epoch.

        PairedData insists on a validate split; its two rows are copies of the first two pairs and are
        never read by the epochs timed here.
        """
        image, text = self.live.image_embeddings, self.live.text_embeddings
        if np.isnan(image).any() or np.isnan(text).any():
            raise RuntimeError("the cache side needs the embeddings of a whole live epoch first")
        n = len(self.live)
        ids = [f"study-{row:06d}" for row in range(n + 2)]
        splits = [TRAIN_SPLIT] * n + [VALIDATION_SPLIT] * 2
        image_store = write_store(self.folder / "image.zarr", self._provenance(self.image_encoder, Modality.IMAGE),
                                  [f"image-{row:06d}" for row in range(n + 2)], ids, splits, image[np.r_[:n, 0, 1]])
        text_store = write_store(self.folder / "text.zarr", self._provenance(self.text_encoder, Modality.TEXT),
                                 ids, ids, splits, text[np.r_[:n, 0, 1]])
        started = time.perf_counter()
        data = PairedData(pair_stores(CacheStore.open(image_store.path), CacheStore.open(text_store.path)),
                          self.recipe)
        self.cache_load_seconds = time.perf_counter() - started
        self.cache_trainer.epoch(data, 0)
        return data

    def figures(self, timings: Mapping[str, Timings]) -> EpochFigures:
        return EpochFigures(self.settings.pairs, self.recipe, timings["live"], timings["cache"],
                            self.cache_load_seconds, _total_parameters(self.image_encoder.model),
                            _total_parameters(self.text_encoder.model),
                            count_trainable_parameters(self.cache_trainer.model))

    @staticmethod
    def _provenance(encoder: ImageEncoder | TextEncoder, modality: Modality) -> Provenance:
        return Provenance(dataset=SYNTHETIC_DATASET, manifest_sha256="0" * 64, modality=modality,
                          backbone=encoder.spec.name, weights_id=encoder.weights_id,
                          weights_sha256=encoder.weights_sha256, preprocessing=encoder.preprocessing,
                          pooling=encoder.spec.pooling.value)


def measure_epochs(settings: Settings, folder: Path) -> EpochFigures:
    """Part 1: live and cache epochs over the same pairs in interleaved rounds (live first in each round)."""
    benchmark = EpochBenchmark(settings, folder)
    benchmark.warm_up()
    timings = interleaved_timings({"live": benchmark.live_epoch_seconds, "cache": benchmark.cache_epoch_seconds},
                                  settings.rounds)
    return benchmark.figures(timings)


class _Trainer:
    """An Adaptor with its AdamW optimiser and warm-up/decay schedule, trained one epoch at a time.

    Epochs run through the train loop's own epoch function (`train.loop.train_epoch`), so both
    sides of part 1, and the steps of part 3b, are exactly the training step `adaptor train` runs.
    """

    def __init__(self, config: AdaptorConfig, recipe: Recipe, device: torch.device) -> None:
        torch.manual_seed(recipe.seed)
        self.device = device
        self.model = Adaptor(config).to(device)
        self.optimizer = adamw(self.model, recipe)
        self.scheduler = linear_warmup_decay(self.optimizer, SCHEDULE_STEPS, recipe.warmup_fraction)

    def epoch(self, data: PairedData | LivePairs, epoch: int) -> float:
        """Trains one epoch of `data`'s batches; returns the mean training loss."""
        return train_epoch(self.model, data, epoch, self.optimizer, self.scheduler, self.device)


def write_store(path: Path, provenance: Provenance, ids: list[str], group_ids: list[str], splits: list[str],
                embeddings: np.ndarray) -> CacheStore:
    """A complete pooled store of `embeddings`, written shard by shard as the extract stage writes it."""
    store = CacheStore.create(path, provenance, ids, group_ids, splits, FeatureShape(embedding_dim=embeddings.shape[1]))
    for span in store.shards():
        store.write_shard(span.index, {ArrayName.EMBEDDING: embeddings[span.rows]})
    return store


def synthetic_embeddings(rows: int, dim: int, seed: int) -> np.ndarray:
    """Seeded random float16 vectors: one block of distinct rows, repeated (the values do not change any timing)."""
    block = np.random.default_rng(seed).standard_normal((min(rows, SYNTHETIC_BLOCK_ROWS), dim), dtype=np.float32)
    return np.resize(block.astype(np.float16), (rows, dim))


def write_synthetic_stores(folder: Path, images: int, studies: int, image_dim: int, text_dim: int,
                           split_shares: Mapping[str, int], seed: int = 0,
                           cache_layout: bool = False) -> tuple[CacheStore, CacheStore]:
    """An image store and a text store shaped like a real pair: images spread over studies, split by study.

    They are `folder`/image.zarr and text.zarr, or with `cache_layout` the stores of dataset
    SYNTHETIC_DATASET and backbones `synthetic_backbone(...)` in the cache folder `folder`, where
    `adaptor train` commands find them.
    """
    counts = np.floor(np.array(list(split_shares.values())) / sum(split_shares.values()) * studies).astype(int)
    counts[0] += studies - counts.sum()
    study_splits = np.random.default_rng(seed).permutation(np.repeat(list(split_shares), counts))
    study_ids = [f"s{study:08d}" for study in range(studies)]
    study_of_image = np.arange(images) * studies // images
    image_path, text_path = folder / "image.zarr", folder / "text.zarr"
    if cache_layout:
        image_path = store_path(folder, SYNTHETIC_DATASET, Modality.IMAGE,
                                synthetic_backbone(Modality.IMAGE, image_dim))
        text_path = store_path(folder, SYNTHETIC_DATASET, Modality.TEXT, synthetic_backbone(Modality.TEXT, text_dim))
    image_store = write_store(image_path, _synthetic_provenance(Modality.IMAGE, image_dim),
                              [f"i{image:08d}" for image in range(images)],
                              [study_ids[study] for study in study_of_image], list(study_splits[study_of_image]),
                              synthetic_embeddings(images, image_dim, seed))
    text_store = write_store(text_path, _synthetic_provenance(Modality.TEXT, text_dim), study_ids,
                             study_ids, list(study_splits), synthetic_embeddings(studies, text_dim, seed + 1))
    return image_store, text_store


def synthetic_backbone(modality: Modality, dim: int) -> str:
    """The backbone name a synthetic store of this modality and width records."""
    return f"synthetic-{modality.value}-{dim}"


def _synthetic_provenance(modality: Modality, dim: int) -> Provenance:
    return Provenance(dataset=SYNTHETIC_DATASET, manifest_sha256="0" * 64, modality=modality,
                      backbone=synthetic_backbone(modality, dim), weights_id="synthetic", weights_sha256="0" * 64,
                      preprocessing={}, pooling="synthetic")


def _total_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass(frozen=True)
class RunCost:
    """One whole training run from the cache, and the same run with the backbones live (extrapolated)."""

    name: str
    epochs: int
    live_pairs_per_epoch: int
    """Pairs the live side would run through the backbones each epoch: training pairs seen, validation pairs."""
    cache_seconds: float
    backbone_seconds_per_pair: float

    @property
    def live_seconds(self) -> float:
        return self.cache_seconds + self.epochs * self.live_pairs_per_epoch * self.backbone_seconds_per_pair

    def lines(self) -> list[str]:
        return [
            f"   cache run {_duration(self.cache_seconds)} -> {SECONDS_PER_HOUR / self.cache_seconds:.3g} sweep points "
            f"per hour",
            f"   live run  {_duration(self.live_seconds)} (extrapolated: cache run + {self.epochs} epochs x "
            f"{self.live_pairs_per_epoch:,} pairs x {self.backbone_seconds_per_pair * 1e3:.1f} ms/pair of part 1's "
            f"live backbones) -> {SECONDS_PER_HOUR / self.live_seconds:.3g} sweep points per hour",
            Ratio(f"live run / cache run ({self.name})", self.live_seconds / self.cache_seconds, unit="x").line(),
        ]


@dataclass(frozen=True)
class DemoFigures:
    """Part 3a: whole real training runs on a demo-sized cache with the DEMO recipe."""

    train_pairs: int
    validate_pairs: int
    image_dim: int
    text_dim: int
    recipe: Recipe
    run: Timings
    adaptor_parameters: int

    def cost(self, backbone_seconds_per_pair: float) -> RunCost:
        seen = steps_per_epoch(self.train_pairs, self.recipe.batch_size) * self.recipe.batch_size
        return RunCost("demo", self.recipe.epochs, seen + self.validate_pairs, self.run.best,
                       backbone_seconds_per_pair)

    def lines(self, backbone_seconds_per_pair: float) -> list[str]:
        return [
            f"3a. demo-sized cache: {self.train_pairs} train + {self.validate_pairs} validate pairs, "
            f"{self.image_dim}/{self.text_dim}-d (the demo's backbone widths, synthetic values); DEMO recipe, "
            f"batch {self.recipe.batch_size}, all {self.recipe.epochs} epochs (early stopping off: an upper bound), "
            f"{_adaptor_text(self.recipe, self.adaptor_parameters)}",
            f"   measured: whole real runs (open, join, load, train, validate and checkpoint every epoch, plot): "
            f"{self.run.text()}",
            *self.cost(backbone_seconds_per_pair).lines(),
        ]


def measure_demo(settings: Settings, folder: Path) -> DemoFigures:
    """Real `train_adaptor` runs, each into a fresh folder, in `settings.rounds` rounds."""
    image_dim, text_dim = get_spec("resnet18-random").dim, get_spec(MINILM_NAME).dim
    image_store, text_store = write_synthetic_stores(folder, settings.demo_pairs, settings.demo_pairs, image_dim,
                                                     text_dim, DEMO_SPLIT_SHARES)
    recipe = DEMO.with_overrides({"epochs": settings.demo_epochs, "patience": 0})
    run_folders = (folder / f"run-{index}" for index in itertools.count())

    def run() -> float:
        return timed(lambda: train_adaptor(pair_stores(CacheStore.open(image_store.path),
                                                       CacheStore.open(text_store.path)),
                                           recipe, next(run_folders), settings.device.value))

    timing = interleaved_timings({"demo": run}, settings.rounds)["demo"]
    splits = pair_stores(image_store, text_store).splits
    return DemoFigures(len(splits[TRAIN_SPLIT]), len(splits[VALIDATION_SPLIT]), image_dim, text_dim, recipe, timing,
                       count_trainable_parameters(Adaptor(recipe.adaptor_config(image_dim, text_dim))))


@dataclass(frozen=True)
class ShortRun:
    """A real `train_adaptor` run of two one-step epochs, split into what is paid once and what every epoch pays.

    The loop's wall clock restarts after each epoch's metrics, so an epoch's share of `wall_seconds`
    also holds the previous epoch's checkpoint writes; the second epoch's share is therefore the
    full price of an epoch, and everything outside `wall_seconds` is paid once per run.
    """

    call_seconds: float
    wall_seconds: float
    first_epoch_seconds: float

    @property
    def second_epoch_seconds(self) -> float:
        """One step, validation, metrics and the first epoch's checkpoints."""
        return self.wall_seconds - self.first_epoch_seconds

    @property
    def once_per_run_seconds(self) -> float:
        """Open and join the stores, load them, set up the model, the last epoch's checkpoints, the plot."""
        return self.call_seconds - self.wall_seconds


def measure_short_run(recipe: Recipe, image_path: Path, text_path: Path, run_dir: Path, device: str) -> ShortRun:
    """Times a real two-epoch training run from opening the stores to its completion marker."""
    if recipe.epochs != 2:
        raise ValueError(f"a short run has 2 epochs, the recipe asks for {recipe.epochs}")
    rows: list[Mapping[str, float]] = []
    results: list[TrainResult] = []
    call_seconds = timed(lambda: results.append(train_adaptor(
        pair_stores(CacheStore.open(image_path), CacheStore.open(text_path)), recipe, run_dir, device,
        on_epoch=rows.append)))
    return ShortRun(call_seconds, results[0].wall_seconds, rows[0]["seconds"])


@dataclass(frozen=True)
class ScaleFigures:
    """Part 3b: the paper's recipe on a MIMIC-CXR-sized pooled cache; steps and short real runs measured."""

    images: int
    studies: int
    dim: int
    store_bytes: int
    write_seconds: float
    train_pairs: int
    validate_pairs: int
    recipe: Recipe
    step: Timings
    steps_per_round: int
    load_seconds: float
    """Open both stores, join them by id, read the pooled arrays into memory (part of every run's start)."""
    short_run: ShortRun
    adaptor_parameters: int

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.train_pairs, self.recipe.batch_size)

    @property
    def epoch_overhead_seconds(self) -> float:
        """Per-epoch cost besides the steps: validation, the previous epoch's checkpoints, metrics."""
        return max(0.0, self.short_run.second_epoch_seconds - self.step.best)

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step.best + self.epoch_overhead_seconds

    @property
    def run_seconds(self) -> float:
        return self.short_run.once_per_run_seconds + self.recipe.epochs * self.epoch_seconds

    def cost(self, backbone_seconds_per_pair: float) -> RunCost:
        seen = self.steps_per_epoch * self.recipe.batch_size
        return RunCost("MIMIC-CXR-sized", self.recipe.epochs, seen + self.validate_pairs, self.run_seconds,
                       backbone_seconds_per_pair)

    def lines(self, backbone_seconds_per_pair: float) -> list[str]:
        cost = self.cost(backbone_seconds_per_pair)
        live_epoch = self.epoch_seconds + cost.live_pairs_per_epoch * backbone_seconds_per_pair
        return [
            f"3b. MIMIC-CXR-sized cache: {self.images:,} images x {self.dim} and {self.studies:,} studies x "
            f"{self.dim} (synthetic float16, {self.store_bytes / 1e9:.2f} GB on disk, written in "
            f"{self.write_seconds:.1f} s): {self.train_pairs:,} train + {self.validate_pairs:,} validate pairs; "
            f"{_adaptor_text(self.recipe, self.adaptor_parameters)}, batch {self.recipe.batch_size}, "
            f"{self.recipe.epochs} epochs",
            f"   measured: Adaptor step {self.step.text('ms', 1e3)}, each round {self.steps_per_round} steps drawn "
            f"from the whole in-memory cache; loading the cache {self.load_seconds:.1f} s (open, join by id, read "
            f"the pooled arrays); a real two-epoch run of one step per epoch: "
            f"{self.short_run.once_per_run_seconds:.1f} s once per run (load, set-up, last checkpoints, plot), "
            f"{self.epoch_overhead_seconds:.1f} s per epoch besides its steps (validation, checkpoints, metrics)",
            f"   extrapolated: epoch = {self.steps_per_epoch} steps x best step + per-epoch overhead = "
            f"{_duration(self.epoch_seconds)}; run = once-per-run + {self.recipe.epochs} epochs; live epoch = epoch + "
            f"{cost.live_pairs_per_epoch:,} pairs through the backbones = {_duration(live_epoch)}",
            Ratio(f"live epoch / cache epoch (MIMIC-CXR-sized, batch {self.recipe.batch_size}, extrapolated)",
                  live_epoch / self.epoch_seconds, unit="x").line(),
            *cost.lines(),
        ]


def measure_scale(settings: Settings, folder: Path) -> ScaleFigures:
    """Writes the MIMIC-CXR-sized stores, times rounds of steps, then real one- and two-epoch runs of one step each."""
    stores: list[CacheStore] = []
    write_seconds = timed(lambda: stores.extend(write_synthetic_stores(
        folder, settings.scale_images, settings.scale_studies, settings.scale_dim, settings.scale_dim,
        cache_formats.SPLIT_SHARES)))
    image_store, text_store = stores
    store_bytes = sum(path.stat().st_size for store in stores for path in store.path.rglob("*") if path.is_file())
    splits = pair_stores(image_store, text_store).splits
    n_train, batch_size = len(splits[TRAIN_SPLIT]), settings.scale_batch_size
    steps_per_round = max(1, settings.steps // settings.rounds)
    if steps_per_round * batch_size > n_train:
        raise typer.BadParameter(f"{steps_per_round} steps per round of {batch_size} pairs need more than the cache's "
                                 f"{n_train} training pairs", param_hint="--steps")
    paper = PAPER.with_overrides({**settings.adaptor_shape, "batch_size": batch_size})
    load_seconds, step = _time_steps(paper.with_overrides({"data_pct": 100 * steps_per_round * batch_size / n_train}),
                                     image_store.path, text_store.path, settings)
    short_run = measure_short_run(paper.with_overrides({"data_pct": 100 * batch_size / n_train, "patience": 0,
                                                         "epochs": 2}),
                                  image_store.path, text_store.path, folder / "run", settings.device.value)
    return ScaleFigures(
        settings.scale_images, settings.scale_studies, settings.scale_dim, store_bytes, write_seconds, n_train,
        len(splits[VALIDATION_SPLIT]), paper, step, steps_per_round, load_seconds, short_run,
        count_trainable_parameters(Adaptor(paper.adaptor_config(settings.scale_dim, settings.scale_dim))))


def _time_steps(recipe: Recipe, image_path: Path, text_path: Path, settings: Settings) -> tuple[float, Timings]:
    """Seconds to load the cache as a run does, and per Adaptor step: each round one epoch of the recipe's subset."""
    started = time.perf_counter()
    data = PairedData(pair_stores(CacheStore.open(image_path), CacheStore.open(text_path)), recipe)
    load_seconds = time.perf_counter() - started
    device = torch.device(settings.device.value)
    trainer = _Trainer(recipe.adaptor_config(data.image.dim, data.text.dim), recipe, device)
    epochs = itertools.count(1)
    steps = interleaved_timings({"step": lambda: timed(lambda: trainer.epoch(data, next(epochs)))}, settings.rounds)
    return load_seconds, steps["step"].scaled(1 / data.steps_per_epoch)


def _adaptor_text(recipe: Recipe, parameters: int) -> str:
    shape = (f"P={recipe.projection_dim}, L={recipe.num_layers}, {recipe.num_heads} heads, FFN {recipe.ffn_dim}")
    paper = all(getattr(recipe, name) == getattr(PAPER, name)
                for name in ("projection_dim", "num_layers", "num_heads", "ffn_dim"))
    return f"{'paper' if paper else 'reduced'} Adaptor ({shape}; {parameters / 1e6:.2f} M trainable parameters)"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def run_benchmark(settings: Settings) -> Iterator[str]:
    """Every part in a temporary folder; yields each part's report lines as soon as it is measured."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as name:
        folder = Path(name)
        epoch = measure_epochs(settings, folder / "epoch")
        yield from epoch.lines(settings)
        formats = cache_formats.measure_formats(settings.formats, _made(folder / "formats"))
        store = formats.named(cache_formats.StoreFormat.name)
        yield (f"2. cache read, {settings.formats.rows:,} x {settings.formats.dim} float16 store from the page cache "
               f"(bench.cache_formats, best of {settings.formats.rounds}): store "
               f"{store.bytes / store.read_seconds / 1e6:.0f} MB/s, raw read of its shard files "
               f"{store.bytes / formats.raw_read_seconds / 1e6:.0f} MB/s")
        yield from (ratio.line() for ratio in formats.ratios())
        yield from measure_demo(settings, folder / "demo").lines(epoch.backbone_seconds_per_pair)
        yield from measure_scale(settings, folder / "scale").lines(epoch.backbone_seconds_per_pair)


def _made(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Tiny backbones and caches: a smoke run of seconds."),
    pairs: int | None = typer.Option(None, "--pairs", min=2, help="Pairs in part 1's epoch, live and from the "
                                     "cache (default 128)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, help="Part 1's batch size; --pairs must be a "
                                          "multiple of it (default 128)."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="Interleaved rounds; best and median are "
                                      "reported (default 3)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Adaptor steps timed on the MIMIC-CXR-sized "
                                     "cache, over all rounds (default 90)."),
    device: Device = typer.Option(Device.CPU, "--device", help="Where backbones and Adaptor run."),
) -> None:
    """Adaptor training from the cache against the same training with the frozen backbones live; sweep cost."""
    if device is Device.CUDA and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible to torch on this machine", param_hint="--device")
    chosen = {"pairs": pairs, "batch_size": batch_size, "rounds": rounds, "steps": steps}
    settings = dataclasses.replace(QUICK if quick else FULL, device=device,
                                   **{name: value for name, value in chosen.items() if value is not None})
    if settings.pairs % settings.batch_size:
        raise typer.BadParameter(f"{settings.pairs} pairs are not a whole number of batches of {settings.batch_size}: "
                                 "both sides must train every pair each epoch", param_hint="--pairs")
    typer.echo("bench.train: Adaptor training from the cache against the frozen backbones run live; sweep cost")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine(settings.device.value).line())
    for line in run_benchmark(settings):
        typer.echo(line)
    typer.echo(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    app()
