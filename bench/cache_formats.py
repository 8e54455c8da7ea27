"""The cache store against the formats a user would pick instead, for the same embeddings.

`python -m bench.cache_formats [--quick] [--rows N] [--dim D]` writes one set of seeded float32
embeddings (rows split train/validate/test in MIMIC-CXR's proportions, interleaved as in a real
manifest) in each format, then measures in interleaved rounds: bytes on disk, write time,
full-read time (every split into memory, as training loads pooled inputs) and the time to read a
batch of random training rows. Contenders:

- store: this project's `CacheStore` (Zarr v3, float16, row-sharded, ids + provenance + markers);
- npy-f32: one float32 `.npy` per split, the published code's cache (random batches via mmap);
- hdf5-f16 / hdf5-f32: one HDF5 file with a dataset per split, through h5py;
- hdf5-f16 shuffle+gzip: the same, compressed losslessly, which is what a size below half the
  float32 cache costs in reading;
- raw: the store's own shard files read into memory (`np.frombuffer` of their bytes), the floor
  any reader of those bytes pays.

The store's checksums are measured beside them: SHA-256 (what its shard markers record) and
crc32c (the fastest hash at hand, for comparison) over the store's data objects, as a share of
the store's write (which includes computing the markers' digests) and of its full read (what
verifying every shard on each read would add). The store's full read is also counted in system
calls: `preadv` calls, shard files and the inner chunks they hold.

A Hugging Face `datasets` Arrow table is measured only when that package is installed.
All reads come from the page cache (the files were just written): the figures are CPU and
memory costs, not disk bandwidth, which favours the larger float32 files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import google_crc32c
import h5py
import numpy as np
import typer

from adaptor_vlp.cache_schema import ArrayName, CacheStore, FeatureShape, Modality, Provenance
from bench.common import Direction, Ratio, best_seconds, describe_machine, timed

SPLIT_SHARES = {"train": 368_960, "validate": 2_991, "test": 5_159}
"""MIMIC-CXR-JPG's official split sizes (images): the benchmark's rows are split in these proportions."""
FULL_READ_GOAL = 1.25
"""Goal: the store's full read within this factor of the fastest format's."""
SIZE_GOAL = 0.5
"""Goal: the store at most this share of the published float32 cache's bytes."""
RAW_READ_GOAL = 0.8
"""Goal: the store's read throughput at least this share of a raw read of its own shard files."""
HDF5_CHUNK_ROWS = 1024
"""Rows per chunk of the compressed HDF5 contender (byte shuffle + gzip level 1, both built into h5py)."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; `--quick` picks small ones."""

    rows: int
    dim: int
    batch_rows: int
    batches: int
    rounds: int

    def command(self, quick: bool) -> str:
        """The command line that repeats this run."""
        return (f"python -m bench.cache_formats{' --quick' if quick else ''} --rows {self.rows} --dim {self.dim} "
                f"--batch-rows {self.batch_rows} --batches {self.batches} --rounds {self.rounds}")


QUICK = Settings(rows=3000, dim=64, batch_rows=256, batches=3, rounds=1)
FULL = Settings(rows=50_000, dim=768, batch_rows=1024, batches=20, rounds=5)


@dataclass(frozen=True)
class Embeddings:
    """The benchmark's data: float32 vectors, MIMIC-style ids (image and study), interleaved splits."""

    values: np.ndarray
    ids: list[str]
    group_ids: list[str]
    splits: np.ndarray

    def rows_of(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def make_embeddings(rows: int, dim: int, seed: int = 0) -> Embeddings:
    """Seeded unit-variance vectors; 44-character dicom-style ids, 8-digit study ids, MIMIC-CXR's split shares."""
    rng = np.random.default_rng(seed)
    shares = np.array(list(SPLIT_SHARES.values()), dtype=np.float64)
    splits = rng.choice(np.array(list(SPLIT_SHARES)), size=rows, p=shares / shares.sum())
    words = rng.integers(0, 2**32, size=(rows, 5), dtype=np.uint64)
    ids = ["-".join(f"{word:08x}" for word in row) for row in words.tolist()]
    group_ids = [f"{50_000_000 + row // 2}" for row in range(rows)]
    return Embeddings(rng.standard_normal((rows, dim), dtype=np.float32), ids, group_ids, splits)


class Format(ABC):
    """One way to keep the embeddings on disk: write them, read them whole, read random training rows."""

    name: str
    keeps_ids_provenance_resume: bool = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @abstractmethod
    def write(self, data: Embeddings) -> None:
        """Writes every split's rows (and whatever else the format keeps)."""

    @abstractmethod
    def read_all(self) -> object:
        """Every split whole, into memory."""

    @abstractmethod
    def read_batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Opens the format once and reads each batch of training rows (positions within the split), in order."""

    def bytes_on_disk(self) -> int:
        return sum(path.stat().st_size for path in self.folder.rglob("*") if path.is_file())

    def write_seconds(self, data: Embeddings) -> float:
        """Seconds to write the embeddings into an emptied folder."""
        shutil.rmtree(self.folder)
        self.folder.mkdir()
        return timed(lambda: self.write(data))


class StoreFormat(Format):
    """This project's cache store, written shard by shard as the extract stage writes it."""

    name = "store (zarr v3 f16)"
    keeps_ids_provenance_resume = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.path = folder / "embeddings.zarr"
        self._train_rows = np.empty(0, dtype=np.int64)

    def write(self, data: Embeddings) -> None:
        provenance = Provenance(dataset="bench", manifest_sha256="0" * 64, modality=Modality.IMAGE,
                                backbone="bench", weights_id="bench", weights_sha256="0" * 64, preprocessing={},
                                pooling="cls")
        store = CacheStore.create(self.path, provenance, data.ids, data.group_ids, list(data.splits),
                                  FeatureShape(embedding_dim=data.values.shape[1]))
        for span in store.shards():
            store.write_shard(span.index, {ArrayName.EMBEDDING: data.values[span.rows]})
        self._train_rows = data.rows_of("train")

    def read_all(self) -> np.ndarray:
        return CacheStore.open(self.path).read(ArrayName.EMBEDDING)

    def read_batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        store = CacheStore.open(self.path)
        return [store.read(ArrayName.EMBEDDING, self._train_rows[rows]) for rows in batches]

    def shard_files(self) -> list[Path]:
        """The data objects of the embedding array (one per shard)."""
        return sorted(p for p in (self.path / ArrayName.EMBEDDING.value / "c").rglob("*") if p.is_file())

    def data_objects(self) -> list[Path]:
        """Every array's shard objects: the files the completion markers' digests cover."""
        return sorted(p for p in self.path.glob("*/c/**/*") if p.is_file())

    def read_calls(self) -> "ReadCalls":
        """System calls of one full read of the embeddings: `preadv` calls, shard files, inner chunks in them."""
        calls = 0
        real_preadv = os.preadv

        def counting_preadv(descriptor: int, buffers: list, position: int) -> int:
            nonlocal calls
            calls += 1
            return real_preadv(descriptor, buffers, position)

        os.preadv = counting_preadv
        try:
            self.read_all()
        finally:
            os.preadv = real_preadv
        array = CacheStore.open(self.path).zarr_array(ArrayName.EMBEDDING)
        chunk_rows = array.metadata.to_dict()["codecs"][0]["configuration"]["chunk_shape"][0]
        return ReadCalls(calls, len(self.shard_files()), -(-array.shape[0] // chunk_rows))

    def embedding_bytes(self) -> int:
        """Bytes of the embedding array alone; the rest of the store is ids, splits, validity and metadata."""
        return sum(path.stat().st_size for path in (self.path / ArrayName.EMBEDDING.value).rglob("*") if path.is_file())


class NpyPerSplitFormat(Format):
    """The published code's cache: one float32 .npy per split, rows aligned by order alone."""

    name = "npy per split (f32)"

    def write(self, data: Embeddings) -> None:
        for split in SPLIT_SHARES:
            np.save(self.folder / f"{split}.npy", data.values[data.rows_of(split)])

    def read_all(self) -> list[np.ndarray]:
        return [np.load(self.folder / f"{split}.npy") for split in SPLIT_SHARES]

    def read_batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        train = np.load(self.folder / "train.npy", mmap_mode="r")
        return [np.asarray(train[rows]) for rows in batches]


class HDF5Format(Format):
    """One HDF5 file, a dataset per split, read through h5py: contiguous, or compressed in row chunks."""

    def __init__(self, folder: Path, dtype: type, compressed: bool = False) -> None:
        super().__init__(folder)
        self.dtype = np.dtype(dtype)
        self.compressed = compressed
        self.name = f"hdf5 ({'f16' if self.dtype == np.float16 else 'f32'}{', shuffle+gzip' if compressed else ''})"
        self.path = folder / "embeddings.h5"

    def write(self, data: Embeddings) -> None:
        with h5py.File(self.path, "w") as file:
            for split in SPLIT_SHARES:
                values = data.values[data.rows_of(split)].astype(self.dtype)
                compression = dict(chunks=(min(len(values), HDF5_CHUNK_ROWS), values.shape[1]), shuffle=True,
                                   compression="gzip", compression_opts=1) if self.compressed else {}
                file.create_dataset(split, data=values, **compression)

    def read_all(self) -> list[np.ndarray]:
        with h5py.File(self.path, "r") as file:
            return [file[split][:] for split in SPLIT_SHARES]

    def read_batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        with h5py.File(self.path, "r") as file:
            return [_in_order(file["train"], rows) for rows in batches]


def _in_order(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """h5py reads only increasing indices: read sorted, then put the rows back in the order asked."""
    order = np.argsort(rows)
    values = dataset[rows[order]]
    result = np.empty_like(values)
    result[order] = values
    return result


@dataclass(frozen=True)
class ReadCalls:
    """How a full read of the store's embeddings reaches the disk."""

    preadv_calls: int
    shard_files: int
    inner_chunks: int


@dataclass(frozen=True)
class ChecksumFigures:
    """Seconds to hash every data object of the store (best round), and how many bytes that is."""

    sha256_seconds: float
    crc32c_seconds: float
    bytes: int


@dataclass(frozen=True)
class FormatFigures:
    """One format's measurements."""

    name: str
    bytes: int
    write_seconds: float
    read_seconds: float
    batch_seconds: float
    keeps_ids_provenance_resume: bool


@dataclass(frozen=True)
class CacheFigures:
    """Every format's figures and the raw read of the store's shard files."""

    formats: list[FormatFigures]
    raw_read_seconds: float
    store_embedding_bytes: int
    """The store's embedding array alone (its shard files and metadata)."""
    checksums: ChecksumFigures
    read_calls: ReadCalls

    def named(self, name: str) -> FormatFigures:
        return next(f for f in self.formats if f.name == name)

    def ratios(self) -> list[Ratio]:
        store = self.named(StoreFormat.name)
        published = self.named(NpyPerSplitFormat.name)
        fastest = min(self.formats, key=lambda f: f.read_seconds)
        return [
            Ratio(f"store full read / fastest ({fastest.name})", store.read_seconds / fastest.read_seconds,
                  goal=FULL_READ_GOAL, direction=Direction.AT_MOST, unit="x"),
            Ratio("store bytes / published float32 npy bytes", store.bytes / published.bytes, goal=SIZE_GOAL,
                  direction=Direction.AT_MOST),
            Ratio("store read throughput / raw read of its shard files", self.raw_read_seconds / store.read_seconds,
                  goal=RAW_READ_GOAL),
            Ratio("marker checksums / store write (sha256)", self.checksums.sha256_seconds / store.write_seconds),
            Ratio("verify on read / store full read (sha256)", self.checksums.sha256_seconds / store.read_seconds),
            Ratio("verify on read / store full read (crc32c)", self.checksums.crc32c_seconds / store.read_seconds),
        ]


def measure_formats(settings: Settings, folder: Path) -> CacheFigures:
    """Writes the embeddings in every format, then times full and random-batch reads in interleaved rounds."""
    data = make_embeddings(settings.rows, settings.dim)
    store = StoreFormat(_subfolder(folder, "store"))
    formats: list[Format] = [store, NpyPerSplitFormat(_subfolder(folder, "npy")),
                             HDF5Format(_subfolder(folder, "hdf5-f16"), np.float16),
                             HDF5Format(_subfolder(folder, "hdf5-f32"), np.float32),
                             HDF5Format(_subfolder(folder, "hdf5-f16-gzip"), np.float16, compressed=True)]
    write = best_seconds({f.name: lambda f=f: f.write_seconds(data) for f in formats}, settings.rounds)
    n_train = len(data.rows_of("train"))
    batches = [np.random.default_rng(seed).choice(n_train, size=min(settings.batch_rows, n_train), replace=False)
               for seed in range(settings.batches)]
    shard_files, objects = store.shard_files(), store.data_objects()
    contenders: dict[str, Callable[[], float]] = {
        "raw": lambda: timed(lambda: _raw_read(shard_files)),
        "sha256": lambda: timed(lambda: [hashlib.sha256(path.read_bytes()).digest() for path in objects]),
        "crc32c": lambda: timed(lambda: [google_crc32c.value(path.read_bytes()) for path in objects]),
    }
    for f in formats:
        contenders[f"read {f.name}"] = lambda f=f: timed(f.read_all)
        contenders[f"batch {f.name}"] = lambda f=f: timed(lambda: f.read_batches(batches))
    best = best_seconds(contenders, settings.rounds)
    figures = [FormatFigures(f.name, f.bytes_on_disk(), write[f.name], best[f"read {f.name}"],
                             best[f"batch {f.name}"] / len(batches), f.keeps_ids_provenance_resume) for f in formats]
    checksums = ChecksumFigures(best["sha256"], best["crc32c"], sum(path.stat().st_size for path in objects))
    return CacheFigures(figures, best["raw"], store.embedding_bytes(), checksums, store.read_calls())


def _raw_read(files: list[Path]) -> list[np.ndarray]:
    return [np.frombuffer(path.read_bytes(), dtype=np.uint8) for path in files]


def _subfolder(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir()
    return path


def report_lines(figures: CacheFigures, settings: Settings) -> list[str]:
    """A table of every format, the raw read, and the ratio lines."""
    published = figures.named(NpyPerSplitFormat.name)
    fastest_read = min(f.read_seconds for f in figures.formats)
    fastest_batch = min(f.batch_seconds for f in figures.formats)
    header = (f"{'format':<30}{'MB':>8}{'x npy':>7}{'write s':>9}{'read s':>9}{'x best':>8}"
              f"{'batch ms':>10}{'x best':>8}  ids+provenance+resume")
    lines = [header]
    for f in figures.formats:
        lines.append(f"{f.name:<30}{f.bytes / 1e6:>8.1f}{f.bytes / published.bytes:>7.2f}{f.write_seconds:>9.3f}"
                     f"{f.read_seconds:>9.3f}{f.read_seconds / fastest_read:>8.2f}{f.batch_seconds * 1e3:>10.2f}"
                     f"{f.batch_seconds / fastest_batch:>8.1f}  {'yes' if f.keeps_ids_provenance_resume else 'no'}")
    lines.append(f"{'raw (store shard bytes)':<30}{'':>8}{'':>7}{'':>9}{figures.raw_read_seconds:>9.3f}"
                 f"{figures.raw_read_seconds / fastest_read:>8.2f}")
    lines.append(f"batch = {settings.batch_rows} random training rows, mean of {settings.batches} batches; "
                 "read = every split whole into memory; write and read: best of the rounds")
    store = figures.named(StoreFormat.name)
    lines.append(f"store bytes: embedding array {figures.store_embedding_bytes / 1e6:.1f} MB "
                 f"({figures.store_embedding_bytes / published.bytes:.3f} of npy), ids, join ids, splits, validity, "
                 f"provenance and markers {(store.bytes - figures.store_embedding_bytes) / 1e6:.1f} MB")
    calls = figures.read_calls
    lines.append(f"store full read: {calls.preadv_calls} preadv calls for {calls.shard_files} shard files holding "
                 f"{calls.inner_chunks} inner chunks (adjacent inner chunks are read in one call)")
    checks = figures.checksums
    lines.append(f"checksums over the store's {checks.bytes / 1e6:.1f} MB of data objects: sha256 "
                 f"{checks.sha256_seconds * 1e3:.1f} ms, crc32c {checks.crc32c_seconds * 1e3:.1f} ms "
                 f"(best round; the store's write includes its markers' sha256)")
    if importlib.util.find_spec("datasets") is None:
        lines.append("Hugging Face datasets (Arrow): not installed here, not measured")
    lines += [ratio.line() for ratio in figures.ratios()]
    return lines


app = typer.Typer(add_completion=False)


@app.command()
def main(
    quick: bool = typer.Option(False, "--quick", help="Small sizes: a smoke run of about a second."),
    rows: int | None = typer.Option(None, "--rows", min=10, help="Embedding rows [default: 50000]."),
    dim: int | None = typer.Option(None, "--dim", min=1, help="Embedding width [default: 768]."),
    batch_rows: int | None = typer.Option(None, "--batch-rows", min=1, help="Rows per random training batch."),
    batches: int | None = typer.Option(None, "--batches", min=1, help="Random batches read per round."),
    rounds: int | None = typer.Option(None, "--rounds", min=1,
                                      help="Interleaved rounds; each contender's best counts."),
) -> None:
    """Bytes, write time, full and random-batch read time of the cache store against npy and HDF5."""
    chosen = {"rows": rows, "dim": dim, "batch_rows": batch_rows, "batches": batches, "rounds": rounds}
    settings = dataclasses.replace(QUICK if quick else FULL, **{k: v for k, v in chosen.items() if v is not None})
    typer.echo("bench.cache_formats: the cache store against the formats a user would pick instead")
    typer.echo(f"command: {settings.command(quick)}")
    typer.echo(describe_machine().line())
    typer.echo(f"embeddings: {settings.rows} x {settings.dim}, float32 in memory, split train/validate/test in "
               "MIMIC-CXR's proportions; files in the page cache")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        figures = measure_formats(settings, Path(folder))
    for line in report_lines(figures, settings):
        typer.echo(line)


if __name__ == "__main__":
    app()
