"""The frame a protocol splits, built from a dataset's own tables in the order its published code held them.

MGCA's preprocess scripts split pandas frames whose rows and order depend on the dataset: RSNA's label rows
grouped by patientId (sorted), SIIM's run-length rows as listed (one per component), COVIDx's train list lines
(the test list is the test split). A patient-level rule (the corrected protocol) splits the images the reader
kept, by the patient the reader found. `protocol_frame` returns that frame as `FrameRow`s; for SIIM it also
keeps each row's EncodedPixels, so a split's copy of an image gets a mask of only that split's rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptor_vlp.cache_schema.manifest import Manifest, ManifestRow, Split
from adaptor_vlp.cache_schema.targets import SIIM_NO_MASK
from adaptor_vlp.extract.datasets.downstream_tables import (
    DownstreamLayoutError,
    find_file,
    read_csv_records,
    read_text_lines,
)
from adaptor_vlp.extract.protocol_splits import FrameRow
from adaptor_vlp.protocols import SplitRule, SplitUnit, TaskProtocol

RSNA_LABELS = ("stage_2_train_labels.csv", ("patientId", "Target"))
SIIM_LABELS = ("train-rle.csv", ("ImageId", "EncodedPixels"))
COVIDX_FILES_OPTION = "label_files"
"""The manifest option where the COVIDx reader names the train and test lists it read."""
COVIDX_DEFAULT_FILES = {"train": "train.txt", "test": "test.txt"}


@dataclass(frozen=True)
class ProtocolFrame:
    """The rows the protocol splits, the official test rows (if the rule keeps a test list), and per frame row
    its run-length cell where the dataset's masks are made of rows (SIIM)."""

    rows: tuple[FrameRow, ...]
    official_test: tuple[FrameRow, ...] = ()
    encoded_pixels: tuple[str, ...] = ()


def protocol_frame(manifest: Manifest, task: TaskProtocol) -> ProtocolFrame:
    """The frame `task`'s split rule works on, for the dataset the reader wrote into `manifest`."""
    if task.split.rule is SplitRule.PATIENT_GROUPS:
        return _manifest_frame(manifest, official_test=task.split.test == 0)
    unit = task.split.unit
    if unit is SplitUnit.PATIENT and manifest.dataset == "rsna":
        return _rsna_frame(manifest.image_root)
    if unit is SplitUnit.LABEL_ROW and manifest.dataset == "siim":
        return _siim_frame(manifest.image_root)
    if unit is SplitUnit.LIST_ROW and manifest.dataset == "covidx":
        return _covidx_frame(manifest)
    raise DownstreamLayoutError(f"protocol task {task.name!r} splits {unit.value} rows by {task.split.rule.value}, "
                                f"which the {manifest.dataset} reader cannot provide")


def _positive(row: ManifestRow) -> bool:
    return any(value == 1.0 for value in row.labels.values()) and len(row.labels) == 1


def _manifest_frame(manifest: Manifest, official_test: bool) -> ProtocolFrame:
    """The reader's images, each with the reader's patient (the image where none is known)."""
    def frame_row(row: ManifestRow) -> FrameRow:
        return FrameRow(row.dicom_id, row.subject_id or row.dicom_id, _positive(row))

    if not official_test:
        return ProtocolFrame(tuple(frame_row(row) for row in manifest.rows))
    return ProtocolFrame(tuple(frame_row(row) for row in manifest.rows if row.split is not Split.TEST),
                         tuple(frame_row(row) for row in manifest.rows if row.split is Split.TEST))


def _rsna_frame(root: Path) -> ProtocolFrame:
    """MGCA/mgca/preprocess/rsna.py:37-43: one row per patientId, sorted (pandas groupby), Target 1 if any box."""
    table = find_file(root, RSNA_LABELS[0], "point --root at the RSNA Pneumonia folder")
    positive: dict[str, bool] = {}
    for _, record in read_csv_records(table, RSNA_LABELS[1]):
        positive[record["patientId"]] = positive.get(record["patientId"], False) or record["Target"] == "1"
    return ProtocolFrame(tuple(FrameRow(patient, patient, positive[patient]) for patient in sorted(positive)))


def _siim_frame(root: Path) -> ProtocolFrame:
    """MGCA/mgca/preprocess/siim.py:14-36: the rows of train-rle.csv as listed; a row is positive unless -1."""
    table = find_file(root, SIIM_LABELS[0], "point --root at the SIIM-ACR Pneumothorax folder")
    records = [record for _, record in read_csv_records(table, SIIM_LABELS[1])]
    rows = tuple(FrameRow(record["ImageId"], record["ImageId"], record["EncodedPixels"].strip() != SIIM_NO_MASK)
                 for record in records)
    return ProtocolFrame(rows, encoded_pixels=tuple(record["EncodedPixels"] for record in records))


def _covidx_frame(manifest: Manifest) -> ProtocolFrame:
    """MGCA/mgca/preprocess/covidx.py:20-38: the train list's lines as listed; the test list is the test split."""
    files = {**COVIDX_DEFAULT_FILES, **dict(manifest.options.get(COVIDX_FILES_OPTION, {}))}
    positives = {row.dicom_id: _positive(row) for row in manifest.rows}

    def lines(name: str) -> tuple[FrameRow, ...]:
        path = find_file(manifest.image_root, name, "point --root at the COVIDx folder")
        parsed = []
        for number, line in read_text_lines(path):
            tokens = line.split()
            if len(tokens) < 3:
                raise DownstreamLayoutError(f"{path} line {number}: {line!r} is not 'patient-id file-name class'")
            parsed.append(FrameRow(tokens[1], tokens[0], positives.get(tokens[1], False)))
        return tuple(parsed)

    return ProtocolFrame(lines(files["train"]), lines(files["test"]))
