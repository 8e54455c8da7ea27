"""Readers: turn a shard's manifest rows into backbone inputs, recording what cannot be read.

Decoders (worker processes in one run, threads inside Dask shard tasks) run these so that JPEG
decoding overlaps the forward pass. A sample that cannot be read comes back as a failure
with its reason, never as a blank input. One pass can feed several backbones: each image is
decoded once, at one `DecodeSize`, and preprocessed for each backbone (`ImagePassRows`).
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

from adaptor_vlp.cache_schema.manifest import ManifestRow
from adaptor_vlp.extract.backbones import BackboneSpec
from adaptor_vlp.extract.device_decoding import Decoder, decode_batch
from adaptor_vlp.extract.image_transforms import DecodeSize, augmented_view, decode_size, preprocess_each, view_seed
from adaptor_vlp.extract.images import DecodedImage, UnreadableImage, read_decoded
from adaptor_vlp.extract.segmentation_input import segmentation_view
from adaptor_vlp.extract.text_cleaning import TextCleaning, clean_text


@dataclass(frozen=True)
class ImageSample:
    """One image's inputs, or the reason it has none."""

    row: int
    pixels: torch.Tensor | None
    views: torch.Tensor | None
    failure: str | None


@dataclass(frozen=True)
class ImageBatch:
    """The readable images of a batch stacked for the backbone, and the failures beside them."""

    rows: list[int]
    pixels: torch.Tensor | None
    views: torch.Tensor | None
    failures: dict[int, str]

    def pin_memory(self) -> ImageBatch:
        """The batch with its tensors in page-locked memory, for fast host-to-GPU copies.

        A DataLoader with pin_memory=True calls this; without it a dataclass batch is left unpinned.
        """
        return dataclasses.replace(self, pixels=None if self.pixels is None else self.pixels.pin_memory(),
                                   views=None if self.views is None else self.views.pin_memory())


@dataclass(frozen=True)
class TextBatch:
    """The usable report texts of a batch, and the unusable ones with the reader's reason.

    `tokens`: the texts tokenised for the backbone (`ReportRows`), None where no text is usable or
    the tokeniser failed: `tokenizer_error` then says why, with every report cut out (`report_failure`),
    for the feeding thread to raise (an exception raised in a worker process would arrive wrapped in its
    traceback).
    """

    rows: list[int]
    texts: list[str]
    failures: dict[int, str]
    tokens: dict[str, torch.Tensor] | None = None
    tokenizer_error: str | None = None


class ImagePassRows(Dataset):
    """A store's manifest rows, indexed by store row, each decoded once and preprocessed for several backbones.

    Item i is one `ImageSample` per spec, in order: the image decoded at `decode`, then each
    spec's steps (those they share run once), and its seeded views (shared by specs with the
    same image preprocessing). An unreadable image is a failure for every spec.
    """

    def __init__(self, rows: Sequence[ManifestRow], image_root: Path, specs: Sequence[BackboneSpec], views: int,
                 decode: DecodeSize, decoder: Decoder = Decoder.CPU, device: str = "cpu", warp_view: int = 0) -> None:
        self.rows = rows
        self.image_root = Path(image_root)
        self.specs = tuple(specs)
        self.views = views
        self.decode = decode
        self.decoder = decoder
        self.device = device
        """Where `Decoder.GPU` decodes (the forward pass's device)."""
        self.warp_view = warp_view

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> Path:
        return self.image_root / self.rows[index].image_path

    def __getitem__(self, index: int) -> tuple[ImageSample, ...]:
        try:
            decoded = read_decoded(self.path(index), self.decode.pixels)
        except UnreadableImage as error:
            return self.samples(index, error)
        return self.samples(index, decoded)

    def samples(self, index: int, decoded: DecodedImage | UnreadableImage) -> tuple[ImageSample, ...]:
        """Item `index` from its decoded image (or the reason it has none), however it was decoded."""
        row = self.rows[index]
        if isinstance(decoded, UnreadableImage):
            failure = f"unreadable image: {decoded.reason} ({row.image_path})"
            return tuple(ImageSample(index, None, None, failure) for _ in self.specs)
        gray = decoded.gray
        views: dict = {}
        if self.views:
            for spec in self.specs:
                if spec.image not in views:
                    views[spec.image] = torch.stack([augmented_view(gray, spec, view_seed(row.dicom_id, k))
                                                     for k in range(self.views)])
        inputs = preprocess_each(gray, self.specs, frame=decoded.frame)
        if self.warp_view:
            inputs = [segmentation_view(pixels, spec, row.dicom_id, self.warp_view)
                      for spec, pixels in zip(self.specs, inputs)]
        return tuple(ImageSample(index, pixels, views.get(spec.image), None)
                     for spec, pixels in zip(self.specs, inputs))

    @staticmethod
    def collate(samples: list[tuple[ImageSample, ...]]) -> tuple[ImageBatch, ...]:
        """One batch per spec, all with the same rows and failures."""
        return tuple(collate_images(list(column)) for column in zip(*samples))


class ImageRows(Dataset):
    """One backbone's rows: `ImagePassRows` of one spec, decoded at its own size unless `decode` says otherwise."""

    def __init__(self, rows: Sequence[ManifestRow], image_root: Path, spec: BackboneSpec, views: int,
                 decode: DecodeSize | None = None) -> None:
        self.spec = spec
        self._rows = ImagePassRows(rows, image_root, [spec], views, decode or DecodeSize(decode_size(spec)))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> ImageSample:
        return self._rows[index][0]

    @staticmethod
    def collate(samples: list[ImageSample]) -> ImageBatch:
        return collate_images(samples)


def collate_images(samples: list[ImageSample]) -> ImageBatch:
    """Stacks the readable samples of a batch; failures travel beside them by store row."""
    readable = [s for s in samples if s.failure is None]
    return ImageBatch(
        rows=[s.row for s in readable],
        pixels=torch.stack([s.pixels for s in readable]) if readable else None,
        views=torch.stack([s.views for s in readable]) if readable and readable[0].views is not None else None,
        failures={s.row: s.failure for s in samples if s.failure is not None},
    )


class Decoders(str, Enum):
    """What decodes images ahead of the forward pass."""

    PROCESSES = "processes"
    """DataLoader worker processes: started once per run, so one run in one process uses these."""
    THREADS = "threads"
    """A thread pool: nothing to start per task, and allowed inside daemonic Dask worker processes."""


SAMPLES_AHEAD_PER_THREAD = 4
"""Samples queued per decoder thread beyond the batch in use: enough that no thread waits for work."""


Rows = TypeVar("Rows", ImageRows, ImagePassRows, "ReportRows")
Batch = ImageBatch | tuple[ImageBatch, ...] | TextBatch
"""What `read_ahead` yields: an `ImageRows` batch, one batch per backbone of an `ImagePassRows`, or a `TextBatch`."""


def image_batches(dataset: Rows, batches: Sequence[list[int]], decoders: int, kind: Decoders,
                  pin_memory: bool) -> Iterator[Batch]:
    """The dataset's fixed batches, in order, decoded by `decoders` processes or threads ahead of use.

    The two kinds give the same batches, byte for byte; 0 decoders decode in the calling thread.
    A pass decoded by `Decoder.GPU` decodes each batch's JPEGs on its device and preprocesses them
    in `decoders` threads (at least one), whichever the kind.
    """
    if isinstance(dataset, ImagePassRows) and dataset.decoder is Decoder.GPU:
        yield from _decoded_on_device(dataset, batches, max(decoders, 1), pin_memory)
        return
    yield from read_ahead(dataset, batches, decoders, kind, pin_memory)


def read_ahead(dataset: Rows, batches: Sequence[list[int]], workers: int, kind: Decoders,
               pin_memory: bool) -> Iterator[Batch]:
    """The dataset's fixed batches, in order, each read and collated by `workers` processes or threads ahead."""
    if kind is Decoders.THREADS and workers:
        yield from _decoded_by_threads(dataset, batches, workers, pin_memory)
        return
    yield from DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=dataset.collate,
                          pin_memory=pin_memory, persistent_workers=False)


def _decoded_by_threads(dataset: Rows, batches: Sequence[list[int]], threads: int,
                        pin_memory: bool) -> Iterator[Batch]:
    """The dataset's fixed batches, in order, decoded by a pool of `threads` threads working ahead.

    Threads decode in parallel because Pillow and torch release the GIL while decoding and
    resizing (two threads decode 2.0x as fast as one on the benchmark's radiographs). All threads
    work on the oldest batch first, so a few batches in flight keep them busy (a DataLoader
    holds two per worker). A separate thread collates (and pins) each batch, as a DataLoader's
    pin-memory thread does.
    """
    batch_size = len(batches[0]) if batches else 1
    in_flight_limit = 2 + math.ceil(SAMPLES_AHEAD_PER_THREAD * threads / batch_size)
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as decode, \
            ThreadPoolExecutor(1, thread_name_prefix="collate") as collate:
        in_flight: deque[Future[Batch]] = deque()
        for batch_rows in batches:
            samples = [decode.submit(dataset.__getitem__, row) for row in batch_rows]
            in_flight.append(collate.submit(_collated, dataset, samples, pin_memory))
            if len(in_flight) >= in_flight_limit:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _decoded_on_device(dataset: ImagePassRows, batches: Sequence[list[int]], threads: int,
                       pin_memory: bool) -> Iterator[Batch]:
    """The pass's fixed batches, in order: each batch's JPEGs decoded at once on the device, in this thread.

    `threads` threads preprocess a batch while the next one decodes; a collate thread stacks (and pins) it.
    """
    with ThreadPoolExecutor(threads, thread_name_prefix="preprocess") as preprocess, \
            ThreadPoolExecutor(1, thread_name_prefix="collate") as collate:
        in_flight: deque[Future[Batch]] = deque()
        for batch_rows in batches:
            decoded = decode_batch([dataset.path(row) for row in batch_rows], dataset.decode.pixels, dataset.device)
            samples = [preprocess.submit(dataset.samples, row, image) for row, image in zip(batch_rows, decoded)]
            in_flight.append(collate.submit(_collated, dataset, samples, pin_memory))
            if len(in_flight) >= 2:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def _collated(dataset: Rows, samples: list[Future], pin_memory: bool) -> Batch:
    batch = dataset.collate([sample.result() for sample in samples])
    if not pin_memory:
        return batch
    return tuple(one.pin_memory() for one in batch) if isinstance(batch, tuple) else batch.pin_memory()


class ReportRows(Dataset):
    """A text store's study rows, indexed by store row; each batch tokenised when it is collated.

    Collating runs in the reader's worker processes (or its collate thread inside Dask shard
    tasks), so reports are tokenised ahead of the forward pass, in parallel with it, and the
    thread that feeds the backbone receives tensors only. `tokenize` must be picklable
    (`extract.encoders.ReportTokenizer`).
    """

    def __init__(self, studies: Sequence[ManifestRow], tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
                 cleaning: TextCleaning = TextCleaning.NONE) -> None:
        self.studies = studies
        self.tokenize = tokenize
        self.cleaning = cleaning

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> TextBatch:
        batch = text_batch([self.studies[row] for row in rows], rows, self.cleaning)
        if not batch.texts:
            return batch
        try:
            return dataclasses.replace(batch, tokens=self.tokenize(batch.texts))
        except Exception as error:
            failure = report_failure(error, batch, [self.studies[row].study_id for row in batch.rows])
            return dataclasses.replace(batch, tokenizer_error=str(failure))


class ReportEncodingFailed(RuntimeError):
    """The text encoder (tokeniser or model) raised on a batch of reports; the message names studies, never text."""


def report_failure(error: Exception, batch: TextBatch, studies: list[str]) -> ReportEncodingFailed:
    """The error for a batch whose reports could not be tokenised or embedded, every report cut out of its message.

    Reports are credentialed data (MIMIC-CXR): an error message that quoted one would carry it into
    logs, so each report of the batch is replaced by its study id before the message is shown.
    """
    message = str(error)
    for study, text in zip(studies, batch.texts):
        if text:
            message = message.replace(text, f"<report of study {study}>")
    return ReportEncodingFailed(
        f"the text encoder failed on the reports of studies {', '.join(studies[:8])}"
        f"{' ...' if len(studies) > 8 else ''} (store rows {batch.rows[0]}-{batch.rows[-1]}): "
        f"{type(error).__name__}: {message}; the complete shards are kept and the same command resumes"
    )


def text_batch(studies: Sequence[ManifestRow], rows: Sequence[int],
               cleaning: TextCleaning = TextCleaning.NONE) -> TextBatch:
    """One batch of study rows with their store row numbers, each report through `cleaning`.

    A report the reader flagged, or one the cleaning leaves too short, is a failure with its reason.
    """
    texts: dict[int, str] = {}
    failures: dict[int, str] = {}
    for row, study in zip(rows, studies):
        cleaned = clean_text(study.report_text, cleaning) if study.report_usable else None
        if cleaned is None:
            failures[row] = f"report unusable: {study.report_issue}"
        elif not cleaned.usable:
            failures[row] = f"report unusable: {cleaned.issue}"
        else:
            texts[row] = cleaned.text
    return TextBatch(rows=list(texts), texts=list(texts.values()), failures=failures)
