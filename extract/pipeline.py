"""Runs frozen backbones over a dataset's manifest, shard by shard, into their cache stores.

Reader (extract.sources) -> encoders (extract.encoders) -> shard buffers -> writer threads -> stores.
Batches never cross a shard boundary and are the same fixed row ranges in every run, so a run
that was killed and resumed, or spread over Dask workers, writes the same bytes as one
uninterrupted run. Several image backbones run in one pass (`Target`s sharing one reader): each
batch is decoded once and embedded by every backbone, and each store gets its own buffers and
writer thread, so each store is the one a single-backbone run at the same decode size writes.
"""
from __future__ import annotations

import dataclasses
import functools
import queue
import shutil
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from adaptor_vlp.cache_schema import (
    ArrayName,
    CacheStore,
    FeatureShape,
    Modality,
    Provenance,
    ProvenanceMismatch,
    ShardSpan,
    dataset_dir,
)
from adaptor_vlp.cache_schema.arrays import FEATURE_MAP_CODEC
from adaptor_vlp.cache_schema.layout import FEATURE_MAP_ARRAYS
from adaptor_vlp.cache_schema.manifest import Manifest, ManifestRow, manifest_sha256, read_manifest
from adaptor_vlp.cache_schema.warps import PUBLISHED_SHIFT_SCALE_ROTATE
from adaptor_vlp.extract.device_decoding import decoder_record
from adaptor_vlp.extract.encoders import (
    MAP_REDUCTIONS,
    EncoderOutput,
    ImageEncoder,
    TextEncoder,
    load_image_encoder,
    load_text_encoder,
)
from adaptor_vlp.extract.job import ExtractionJob, ExtractionPass
from adaptor_vlp.extract.sources import (
    Decoders,
    ImageBatch,
    ImagePassRows,
    ReportEncodingFailed,
    ReportRows,
    TextBatch,
    image_batches,
    read_ahead,
    report_failure,
)

Encoder = ImageEncoder | TextEncoder


@dataclass(frozen=True)
class Target:
    """One backbone's part of a pass: its job, its loaded encoder and the store it fills."""

    job: ExtractionJob
    encoder: Encoder
    store: CacheStore


ShardDone = Callable[[Target, ShardSpan, int], None]
"""Called after a shard of a target's store is written, with its span and its number of failures."""
BatchDone = Callable[[Target, int], None]
"""Called after each batch, per target, with the number of rows it covered (for progress bars)."""


def _ignore_shard(target: Target, span: ShardSpan, failures: int) -> None:
    """The default ShardDone: nothing to report."""


def _ignore_batch(target: Target, rows: int) -> None:
    """The default BatchDone: nothing to report."""


@dataclass(frozen=True)
class StoreRows:
    """The rows a store holds, in store order: its ids, join ids and splits, and the manifest rows behind them."""

    manifest_rows: tuple[ManifestRow, ...]
    ids: list[str]
    group_ids: list[str]
    splits: list[str]


def store_rows(manifest: Manifest, modality: Modality) -> StoreRows:
    """Images: one row per manifest row (id dicom_id). Texts: one row per study (id study_id)."""
    if modality is Modality.IMAGE:
        rows = manifest.rows
        ids = [r.dicom_id for r in rows]
    else:
        rows = manifest.studies()
        ids = [r.study_id for r in rows]
    return StoreRows(rows, ids, [r.study_id for r in rows], [r.split.value for r in rows])


def load_encoder(job: ExtractionJob) -> Encoder:
    """The job's frozen encoder (the one expensive object of a run)."""
    loader = load_image_encoder if job.modality is Modality.IMAGE else load_text_encoder
    return loader(job.spec, weights=job.weights, device=job.device, precision=job.precision, verbose=job.verbose)


def open_store(job: ExtractionJob, encoder: Encoder, manifest_folder: Path, rows: StoreRows,
               overwrite: bool = False) -> CacheStore:
    """Creates the job's store, or reopens it to resume; refuses one built with other settings.

    An image store records how its images were decoded (`image_decoding`).
    """
    if overwrite and job.store.exists():
        shutil.rmtree(job.store)
    if job.modality is Modality.IMAGE and job.store.exists():
        _check_input_size(job.store, encoder.spec.image_size)
    decoding = image_decoding(job) if job.modality is Modality.IMAGE else {}
    maps = {"feature_maps": feature_maps_record(encoder)} if job.feature_maps else {}
    preprocessing = {**encoder.preprocessing, **decoding, "tokens": job.tokens, "views": job.views,
                     "forward_precision": encoder.precision.value, **maps}
    if job.segmentation_view:
        preprocessing["segmentation_view"] = {"index": job.segmentation_view,
                                              "warp": PUBLISHED_SHIFT_SCALE_ROTATE.record()}
    provenance = Provenance(
        dataset=job.dataset,
        manifest_sha256=manifest_sha256(manifest_folder),
        modality=job.modality,
        backbone=job.backbone,
        weights_id=encoder.weights_id,
        weights_sha256=encoder.weights_sha256,
        preprocessing=preprocessing,
        pooling=encoder.spec.pooling.value,
    )
    return CacheStore.create_or_resume(job.store, provenance, rows.ids, rows.group_ids, rows.splits,
                                       store_features(job, encoder), job.shard_rows)


REDUCED_DECODE_FRAME = "full resolution"
"""What a reduced decode's first resize takes its output shape from (`image_transforms.preprocess_each`'s frame)."""


def image_decoding(job: ExtractionJob) -> dict:
    """The preprocessing entries that say how an image store's images were decoded.

    `decode_size`: 'full' or the shorter side in pixels. A reduced decode also records
    `reduced_decode_frame`: its first resize's output shape comes from the full-resolution frame, so a
    store from before (shape from the reduced image) is refused on resume, naming that field.
    `decoder`, only for a store whose JPEGs the device decoded (`device_decoding.decoder_record`).
    """
    decoding: dict = {"decode_size": job.decode.record(), **decoder_record(job.decoder, job.device)}
    if job.decode.pixels is not None:
        decoding["reduced_decode_frame"] = REDUCED_DECODE_FRAME
    return decoding


def _check_input_size(path: Path, size: int) -> None:
    """Refuses to resume an image store made at another input size, naming that field first: the weights'
    fingerprint would differ too for models whose position table is sized to the input, and hide the cause."""
    found = CacheStore.open(path).provenance.preprocessing.get("image_size")
    if found is not None and found != size:
        raise ProvenanceMismatch(str(path), "preprocessing.image_size", size, found)


def store_features(job: ExtractionJob, encoder: Encoder) -> FeatureShape:
    """The arrays the job's store holds beside the ids: their widths, token count, views and feature maps."""
    return FeatureShape(
        embedding_dim=encoder.dim,
        token_count=encoder.token_count if job.tokens else 0,
        token_dim=encoder.dim if job.tokens else 0,
        views=job.views,
        feature_maps=encoder.feature_map_shapes() if job.feature_maps else (),
    )


def feature_maps_record(encoder: ImageEncoder) -> dict:
    """What a store's feature maps are, for its provenance: where the backbone was cut, each level's size, the codec."""
    return {"levels": [list(shape) for shape in encoder.feature_map_shapes()], "reductions": list(MAP_REDUCTIONS),
            "layers": "the stem after its ReLU and the first three residual stages (models/seg_models.py:49-52)",
            "dtype": "float16", "codec": dict(FEATURE_MAP_CODEC)}


class ShardBuffer:
    """Collects one shard's batches until every row is either embedded or recorded as failed."""

    def __init__(self, store: CacheStore, span: ShardSpan) -> None:
        self.span = span
        n = span.stop - span.start
        self.arrays = {name: np.full((n, *shape[1:]), np.nan,
                                     dtype=np.float16 if name in FEATURE_MAP_ARRAYS else np.float32)
                       for name, shape in store.features.shapes(store.n_rows).items()}  # maps: megabytes a row
        if ArrayName.TOKEN_MASK in self.arrays:
            self.arrays[ArrayName.TOKEN_MASK] = np.zeros(self.arrays[ArrayName.TOKEN_MASK].shape, dtype=bool)
        self.failed: dict[int, str] = {}
        self.remaining = n

    def add(self, rows: Sequence[int], outputs: dict[ArrayName, np.ndarray], failures: dict[int, str]) -> None:
        offsets = np.asarray(rows, dtype=np.int64) - self.span.start
        for name, values in outputs.items():
            self.arrays[name][offsets] = values
        self.failed.update(failures)
        self.remaining -= len(rows) + len(failures)

    @property
    def complete(self) -> bool:
        return self.remaining == 0


class ShardWriter:
    """Writes finished shards on a background thread so the zarr write does not stall the forward pass."""

    def __init__(self, store: CacheStore, on_shard_done: ShardDone) -> None:
        self._store = store
        self._on_shard_done = on_shard_done
        self._queue: queue.Queue[ShardBuffer | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def submit(self, buffer: ShardBuffer) -> None:
        self._raise_if_failed()
        self._queue.put(buffer)

    def close(self) -> None:
        """Waits for every submitted shard to be written; re-raises a write error here."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _run(self) -> None:
        while (buffer := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._store.write_shard(buffer.span.index, buffer.arrays, buffer.failed)
                self._on_shard_done(buffer.span, len(buffer.failed))
            except BaseException as error:  # surfaced to the main thread by close()/submit()
                self._error = error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def extract_shards(
    targets: Sequence[Target],
    rows: StoreRows,
    image_root: Path,
    spans: Sequence[ShardSpan],
    on_shard_done: ShardDone = _ignore_shard,
    on_batch_done: BatchDone = _ignore_batch,
    decoders: Decoders = Decoders.PROCESSES,
) -> None:
    """Embeds the given shards with every target's backbone and writes them into its store.

    Every row ends embedded or recorded as a failure in every target's store. The targets share
    the pass's settings (`ExtractionPass`) and their stores' shard plan; `num_workers` decoders
    of the given kind read each image once, ahead of the forward passes.
    """
    if not spans:
        return
    shard_rows = targets[0].store.shard_rows
    if any(target.store.shard_rows != shard_rows for target in targets):
        raise ValueError("the targets of one pass must share their stores' shard plan")
    writers = [ShardWriter(target.store, functools.partial(on_shard_done, target)) for target in targets]
    buffers: dict[tuple[int, int], ShardBuffer] = {}
    try:
        for shard_index, batch_rows, outputs, failures in _embedded_batches(targets, rows, image_root, spans,
                                                                            shard_rows, decoders):
            for position, (target, arrays) in enumerate(zip(targets, outputs)):
                key = (position, shard_index)
                buffer = buffers.get(key)
                if buffer is None:  # allocated once per shard: a --tokens shard buffer is hundreds of MB
                    buffer = buffers[key] = ShardBuffer(target.store, target.store.shards()[shard_index])
                buffer.add(batch_rows, arrays, failures)
                on_batch_done(target, len(batch_rows) + len(failures))
                if buffer.complete:
                    writers[position].submit(buffers.pop(key))
    finally:
        _close_all(writers)


def _close_all(writers: Sequence[ShardWriter]) -> None:
    """Waits for every writer; the first write error is raised once all have stopped."""
    first_error: BaseException | None = None
    for writer in writers:
        try:
            writer.close()
        except BaseException as error:  # the others still finish their shards
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def _embedded_batches(
    targets: Sequence[Target], rows: StoreRows, image_root: Path, spans: Sequence[ShardSpan], shard_rows: int,
    decoders: Decoders,
) -> Iterator[tuple[int, list[int], list[dict[ArrayName, np.ndarray]], dict[int, str]]]:
    """(shard index, embedded rows, each target's arrays, failed rows) for each fixed batch of the spans."""
    settings = targets[0].job
    batches = shard_batches(spans, settings.batch_size)
    if settings.modality is Modality.TEXT:
        (target,) = targets
        reports = ReportRows(rows.manifest_rows, target.encoder.tokenization, target.encoder.spec.text_cleaning)
        for batch_rows, batch in zip(batches, read_ahead(reports, batches, settings.num_workers, decoders,
                                                         pin_memory=False)):
            outputs = _encoded_reports(target.encoder, batch, rows, settings.tokens) if batch.texts else {}
            yield batch_rows[0] // shard_rows, batch.rows, [outputs], batch.failures
        return
    dataset = ImagePassRows(rows.manifest_rows, image_root, [target.encoder.spec for target in targets],
                            views=settings.views, decode=settings.decode, decoder=settings.decoder,
                            device=str(targets[0].encoder.device), warp_view=settings.segmentation_view)
    pin_memory = any(target.encoder.device.type == "cuda" for target in targets)
    loader = image_batches(dataset, batches, settings.num_workers, decoders, pin_memory=pin_memory)
    for batch_rows, per_backbone in zip(batches, loader):
        outputs = [_embedded_images(target.encoder, batch, target.job.tokens, target.job.feature_maps)
                   for target, batch in zip(targets, per_backbone)]
        yield batch_rows[0] // shard_rows, per_backbone[0].rows, outputs, per_backbone[0].failures


def _embedded_images(encoder: ImageEncoder, batch: ImageBatch, tokens: bool,
                     feature_maps: bool) -> dict[ArrayName, np.ndarray]:
    """One backbone's arrays for a batch's readable images: pooled (tokens, feature maps), its views' pooled ones."""
    if batch.pixels is None:
        return {}
    outputs = _encoder_arrays(encoder.encode(batch.pixels, with_tokens=tokens, with_feature_maps=feature_maps))
    if batch.views is not None:
        n, k = batch.views.shape[:2]
        pooled = encoder.encode(batch.views.flatten(0, 1)).pooled
        outputs[ArrayName.VIEWS] = pooled.reshape(n, k, -1).numpy()
    return outputs


def _encoded_reports(encoder: Encoder, batch: TextBatch, rows: StoreRows, tokens: bool) -> dict[ArrayName, np.ndarray]:
    """The batch's tokenised reports through the encoder; an encoder error is re-raised naming studies by id only."""
    if batch.tokenizer_error is not None:
        raise ReportEncodingFailed(batch.tokenizer_error)
    try:
        return _encoder_arrays(encoder.encode_tokenized(batch.tokens, with_tokens=tokens))
    except Exception as error:
        raise report_failure(error, batch, [rows.ids[row] for row in batch.rows]) from None


def shard_batches(spans: Iterable[ShardSpan], batch_size: int) -> list[list[int]]:
    """Fixed batches of store rows, none crossing a shard boundary: the same in every run."""
    return [list(range(start, min(start + batch_size, span.stop)))
            for span in spans for start in range(span.start, span.stop, batch_size)]


def _encoder_arrays(output: EncoderOutput) -> dict[ArrayName, np.ndarray]:
    arrays = {ArrayName.EMBEDDING: output.pooled.numpy()}
    if output.tokens is not None:
        arrays[ArrayName.TOKENS] = output.tokens.numpy()
        arrays[ArrayName.TOKEN_MASK] = output.token_mask.numpy()
    for name, level in zip(FEATURE_MAP_ARRAYS, output.feature_maps or ()):
        arrays[name] = level.numpy()
    return arrays


def resolve_image_root(job: ExtractionJob, manifest: Manifest) -> Path:
    """Where images lie: the job's override (data moved) or the root recorded in the manifest."""
    return Path(job.image_root) if job.image_root else Path(manifest.image_root)


def worker_device(device: str) -> str:
    """On a multi-GPU node, Dask worker i of a local cluster takes GPU i mod the GPU count."""
    if device != "cuda" or torch.cuda.device_count() < 2:
        return device
    from distributed import get_worker

    name = get_worker().name
    return f"cuda:{int(name) % torch.cuda.device_count()}" if str(name).isdigit() else device


ENCODERS_PER_WORKER = 8
"""Encoders a Dask worker process keeps loaded across its shard tasks: every backbone of a pass, and then some."""


@lru_cache(maxsize=ENCODERS_PER_WORKER)
def cached_encoder(job: ExtractionJob) -> Encoder:
    """One encoder per worker process and job, reused across that worker's shard tasks."""
    return load_encoder(job)


@dataclass(frozen=True)
class PendingShard:
    """A shard some stores of a pass still lack: its span, and the positions (in the pass) of those stores' jobs."""

    span: ShardSpan
    jobs: tuple[int, ...]


def run_shard_task(extraction: ExtractionPass, shard: PendingShard) -> int:
    """A self-contained shard task (for Dask workers): one shard for every store that lacks it; returns its failures.

    The images are decoded once for all those stores' backbones (the same rows fail in each). Its `num_workers`
    decoders are threads: a Dask worker process is daemonic (it may not start processes), and its start method
    is spawn, so decoding processes would cost seconds of start-up in every shard task.
    """
    settings = extraction.settings
    manifest_folder = dataset_dir(settings.cache_dir, settings.dataset)
    manifest = read_manifest(manifest_folder)
    rows = store_rows(manifest, settings.modality)
    targets = []
    for position in shard.jobs:
        job = extraction.jobs[position]
        encoder = cached_encoder(dataclasses.replace(job, device=worker_device(job.device)))
        targets.append(Target(job, encoder, CacheStore.open(job.store, writable=True)))
    failures: list[int] = []
    extract_shards(targets, rows, resolve_image_root(settings, manifest), [shard.span],
                   on_shard_done=lambda target, span, failed: failures.append(failed), decoders=Decoders.THREADS)
    return failures[0]
