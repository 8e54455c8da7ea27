"""A reader's manifest re-split by a protocol: `adaptor extract manifest --protocol`.

The reader finds the images and their labels and masks; the protocol decides the splits (`protocol_splits`, on
the frame of `protocol_frames`). Each (image, split) pair of the protocol becomes one manifest row, so an image
the published SIIM split puts in two splits is there twice (ids `<image>@<split>`), each copy with the mask of
only that split's label rows. Images no split holds (negatives a balanced training split did not draw) are
listed as excluded with that reason. The manifest's JSON records the protocol, its split, the subsets it drew
for each task that shares the split, and counts that size the protocol's faults.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from adaptor_vlp.cache_schema.manifest import Exclusion, Manifest, ManifestRow, Split
from adaptor_vlp.cache_schema.targets import decode_siim_rle, encode_rle_target, parse_target_header
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError
from adaptor_vlp.extract.protocol_frames import (
    COVIDX_DEFAULT_FILES,
    COVIDX_FILES_OPTION,
    ProtocolFrame,
    protocol_frame,
)
from adaptor_vlp.extract.protocol_splits import SPLIT_ORDER, ProtocolSplit, protocol_split
from adaptor_vlp.protocols import MANIFEST_OPTION, HeadTask, Protocol, ProtocolRecord, TaskProtocol

NOT_DRAWN = "negative not drawn for the balanced training split"
DEFAULT_FRACTIONS = (1.0, 10.0, 100.0)
SPLIT_OPTIONS = ("fractions", "seed", "split_unit", "validation")
"""The reader's options that describe its own default split, dropped when a protocol splits instead."""


def apply_protocol(manifest: Manifest, protocol: Protocol, kind: HeadTask,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Manifest:
    """The manifest split as `protocol` splits its dataset for `kind` (and every task sharing that split)."""
    task = protocol.task(manifest.dataset, kind)
    _check_classes(manifest, protocol, task)
    frame = protocol_frame(manifest, task)
    split = protocol_split(frame.rows, task, (), frame.official_test)
    sharing = protocol.tasks_sharing_split(manifest.dataset, kind)
    by_id = {row.dicom_id: row for row in manifest.rows}
    table = frame.rows + frame.official_test
    rows = [_row(by_id[image], split, table, frame, image, name)
            for name in SPLIT_ORDER for image in split.splits[name].images if image in by_id]
    if not rows:
        raise DownstreamLayoutError(f"none of the {len(by_id)} images the {manifest.dataset} reader kept is in a "
                                    f"split of protocol {protocol.name!r}: do its tables list the same image ids?")
    excluded = [*manifest.excluded, *(_not_drawn(by_id[image]) for image in split.unused if image in by_id)]
    subsets = {other.name: _subsets(protocol_split(frame.rows, other, fractions, frame.official_test), by_id)
               for other in sharing}
    record = ProtocolRecord(
        name=protocol.name, source=str(protocol.source), dataset=manifest.dataset,
        tasks=tuple(other.name for other in sharing), split=task.split.to_json(),
        subsets={name: drawn for name, drawn in subsets.items() if drawn}, measured=_measured(split, by_id, rows))
    options = {key: value for key, value in manifest.options.items() if key not in SPLIT_OPTIONS}
    return Manifest(manifest.dataset, manifest.image_root, manifest.reports_root, tuple(rows),
                    {**options, MANIFEST_OPTION: record.to_json()}, label_names=manifest.label_names,
                    excluded=tuple(excluded))


def protocol_kind(protocol: Protocol, dataset: str) -> HeadTask:
    """The task kind whose split to write when none is named: the protocol's only split of the dataset."""
    tasks = [task for task in protocol.tasks.values() if task.dataset == dataset]
    if not tasks:
        raise DownstreamLayoutError(f"protocol {protocol.name!r} ({protocol.source}) has no task on {dataset}")
    if len(protocol.tasks_sharing_split(dataset, tasks[0].kind)) != len(tasks):
        kinds = sorted(task.kind.value for task in tasks)
        raise DownstreamLayoutError(f"protocol {protocol.name!r} splits {dataset} differently for its tasks "
                                    f"({', '.join(kinds)}): name one with --kind")
    return tasks[0].kind


def _check_classes(manifest: Manifest, protocol: Protocol, task: TaskProtocol) -> None:
    """A task with a class vocabulary (COVIDx's three classes) refuses lists of another, naming them."""
    if task.classes and tuple(manifest.label_names) != task.classes:
        files = manifest.options.get(COVIDX_FILES_OPTION, COVIDX_DEFAULT_FILES)
        named = ", ".join(str(manifest.image_root / name) for name in files.values())
        raise DownstreamLayoutError(
            f"{named}: the lists hold the classes {list(manifest.label_names)}, but protocol {protocol.name!r} task "
            f"{task.name!r} classifies {list(task.classes)} (its published values are {len(task.classes)}-class "
            "accuracies); give the lists of that vocabulary, e.g. COVIDx v9A's train_COVIDx9A.txt / test_COVIDx9A.txt")


def _row(row: ManifestRow, split: ProtocolSplit, table: Sequence, frame: ProtocolFrame, image: str,
         name: Split) -> ManifestRow:
    """The reader's row for `image` in split `name`; an image in several splits gets only this split's mask."""
    row_id = split.row_id(image, name)
    fields: dict[str, Any] = {"dicom_id": row_id, "split": name}
    if row_id != image and frame.encoded_pixels:
        positions = split.splits[name].rows[image]
        positive = any(table[position].positive for position in positions)
        fields.update(mask=_mask_of_rows(row, [frame.encoded_pixels[position] for position in positions]),
                      labels={label: 1.0 if positive else 0.0 for label in row.labels})
    return ManifestRow(**{**row.__dict__, **fields})


def _mask_of_rows(row: ManifestRow, cells: Sequence[str]) -> str:
    """The union of one split's run-length cells for an image, at the size the reader's mask records."""
    header = parse_target_header(row.mask)
    mask = np.zeros((header.height, header.width), dtype=bool)
    for cell in cells:
        mask |= decode_siim_rle(cell, header.height, header.width)
    return encode_rle_target(mask)


def _not_drawn(row: ManifestRow) -> Exclusion:
    return Exclusion(row.dicom_id, row.study_id, row.subject_id, row.image_path, NOT_DRAWN)


def _subsets(split: ProtocolSplit, by_id: dict[str, ManifestRow]) -> dict[float, tuple[str, ...]]:
    """Each drawn subset as manifest ids of training rows (images the reader left out are not in it)."""
    return {pct: tuple(sorted(split.row_id(image, Split.TRAIN) for image in images if image in by_id))
            for pct, images in split.subsets.items()}


def _measured(split: ProtocolSplit, by_id: dict[str, ManifestRow], rows: Sequence[ManifestRow]) -> dict[str, int]:
    """Counts that size the split's faults, over the images the manifest holds."""
    images_of = {name: set(split.splits[name].images) & set(by_id) for name in SPLIT_ORDER}
    patients_of = {name: {row.subject_id for row in rows if row.split is name and row.subject_id}
                   for name in SPLIT_ORDER}
    shared_patients: set[str] = set()
    for index, first in enumerate(SPLIT_ORDER):
        for second in SPLIT_ORDER[index + 1:]:
            shared_patients |= patients_of[first] & patients_of[second]
    held = set().union(*images_of.values())
    return {
        "images": len(held),
        "images_in_several_splits": len(split.images_in_several_splits() & held),
        "images_in_train_and_test": len(images_of[Split.TRAIN] & images_of[Split.TEST]),
        "patients_in_several_splits": len(shared_patients),
    }
