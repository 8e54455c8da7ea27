"""The manifest: one row per image with stable ids, split, view, report text, labels and an optional mask.

A dataset reader builds a `Manifest` once; every later stage reads it back from
`CACHE/<dataset>/manifest.csv` + `manifest.json`. Paths in the CSV are relative to the image root
recorded in the JSON so that a cache moves with its data, and the SHA-256 of the CSV bytes goes into
every store's provenance so that stores built from different manifests are never joined.

The label columns are the manifest's `label_names` (the 14 CheXpert labels unless a reader names
others, e.g. COVIDx's classes), recorded in the JSON. Segmentation datasets add a `mask` column
holding each row's target string (see `cache_schema.targets`); manifests without targets have no such
column, so a MIMIC-CXR manifest's CSV is the same as before masks existed.

What a reader left out is on record too: `excluded.csv` beside the manifest lists every excluded
row (its ids as far as the tables give them, its image path, the reason), and the JSON counts
them by reason and names the file. Neither is part of the manifest's identity (its hash).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from adaptor_vlp.cache_schema.targets import TargetError, parse_target_header
from adaptor_vlp.cache_schema.writes import write_together, writing

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
EXCLUDED_CSV = "excluded.csv"
"""Beside the manifest: one row per image a reader left out, with the reason."""
EXCLUDED_COLUMNS = ("dicom_id", "study_id", "subject_id", "image_path", "reason")

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
"""The 14 CheXpert label names in the order of the official MIMIC-CXR-JPG label file."""

LABEL_TEXT: Mapping[float, str] = {1.0: "1.0", 0.0: "0.0", -1.0: "-1.0"}
"""Positive, negative and uncertain as the CSVs spell them; a label not mentioned is None (empty cell)."""

ID_COLUMNS = ("dicom_id", "study_id", "subject_id", "split", "view", "image_path", "report_text", "report_issue")
MASK_COLUMN = "mask"
"""The last CSV column, present only when some row has a segmentation target."""


class Split(str, Enum):
    """The official MIMIC-CXR splits."""

    TRAIN = "train"
    VALIDATE = "validate"
    TEST = "test"


class ManifestError(ValueError):
    """A manifest folder is missing a file or holds one that cannot be read back."""


@dataclass(frozen=True)
class Exclusion:
    """An image a reader left out: its ids as far as the dataset's tables give them ("" where not), path, why."""

    dicom_id: str
    study_id: str
    subject_id: str
    image_path: str
    reason: str


@dataclass(frozen=True)
class ManifestRow:
    """One image: its ids, split, view, where it lies, its study's report text, labels and segmentation target.

    `labels` maps label names to 1.0, 0.0, -1.0 or None (not mentioned, or not to be scored).
    `mask` is a target string (`rle:...` or `boxes:...`, see `cache_schema.targets`), "" when the row has none.
    """

    dicom_id: str
    study_id: str
    subject_id: str
    split: Split
    view: str
    image_path: str
    report_text: str
    report_issue: str
    labels: Mapping[str, float | None] = field(hash=False)
    mask: str = ""

    @property
    def report_usable(self) -> bool:
        """True when the report text may be embedded (no issue was recorded)."""
        return self.report_issue == ""


@dataclass(frozen=True)
class Manifest:
    """A dataset's rows with where they came from, what the reader left out and why, and its label names."""

    dataset: str
    image_root: Path
    reports_root: Path
    rows: tuple[ManifestRow, ...]
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    exclusions: Mapping[str, int] = field(default_factory=dict, hash=False)
    """Images left out, counted by reason (derived from `excluded` when that is given)."""
    label_names: tuple[str, ...] = CHEXPERT_LABELS
    excluded: tuple[Exclusion, ...] = field(default=(), hash=False, compare=False)
    """The images left out, one record each; empty for a manifest read back (see `read_exclusions`)."""

    def __post_init__(self) -> None:
        if self.excluded:
            counts = dict(sorted(Counter(e.reason for e in self.excluded).items()))
            if self.exclusions and dict(self.exclusions) != counts:
                raise ManifestError(f"exclusion counts {dict(self.exclusions)} disagree with the excluded rows "
                                    f"given ({counts})")
            object.__setattr__(self, "exclusions", counts)
        names = tuple(self.label_names)
        clashes = sorted(set(names) & {*ID_COLUMNS, MASK_COLUMN})
        if clashes or len(set(names)) != len(names) or "" in names:
            raise ManifestError(
                f"label names {list(names)} must be unique, non-empty and differ from the columns "
                f"{[*ID_COLUMNS, MASK_COLUMN]}"
            )
        object.__setattr__(self, "label_names", names)

    @property
    def has_masks(self) -> bool:
        """True when some row carries a segmentation target (the CSV then has a `mask` column)."""
        return any(row.mask for row in self.rows)

    def studies(self) -> tuple[ManifestRow, ...]:
        """The first row of each study, in first-appearance order: the unit of text extraction."""
        first_rows: dict[str, ManifestRow] = {}
        for row in self.rows:
            first_rows.setdefault(row.study_id, row)
        return tuple(first_rows.values())

    def split_counts(self) -> dict[str, int]:
        """Rows per split, every split listed (zero where empty), in the official order."""
        counts = Counter(row.split for row in self.rows)
        return {split.value: counts.get(split, 0) for split in Split}

    def report_issue_counts(self) -> dict[str, int]:
        """Rows per report issue (rows with a usable report are not counted), sorted by issue."""
        counts = Counter(row.report_issue for row in self.rows if not row.report_usable)
        return dict(sorted(counts.items()))


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write `manifest.csv`, `excluded.csv` and `manifest.json` into `folder` (created if needed); return the CSV path.

    The same manifest always gives the same bytes, so its hash identifies it. The files are
    replaced together once all are written (`write_together`), so a failed write leaves the
    previous manifest whole.
    """
    csv_bytes = _csv_bytes(manifest)
    csv_path = folder / MANIFEST_CSV
    excluded_path = folder / EXCLUDED_CSV
    listed = bool(manifest.excluded) or not manifest.exclusions
    description = {
        "dataset": manifest.dataset,
        "image_root": str(manifest.image_root),
        "reports_root": str(manifest.reports_root),
        "options": dict(manifest.options),
        "label_names": list(manifest.label_names),
        "n_rows": len(manifest.rows),
        "counts": manifest.split_counts(),
        "exclusions": dict(sorted(manifest.exclusions.items())),
        "excluded_file": EXCLUDED_CSV if listed else None,
        "report_issues": manifest.report_issue_counts(),
        "manifest_sha256": hashlib.sha256(csv_bytes).hexdigest(),
    }
    files = {csv_path: csv_bytes, folder / MANIFEST_JSON: (json.dumps(description, indent=2) + "\n").encode("utf-8")}
    if listed:
        files[excluded_path] = _excluded_bytes(manifest.excluded)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    write_together(files)
    if not listed:  # counts without records (a manifest read back): an older list would not match them
        excluded_path.unlink(missing_ok=True)
    return csv_path


def excluded_file(folder: Path) -> Path | None:
    """The list of excluded images beside the manifest in `folder`, or None when none was written."""
    path = Path(folder) / EXCLUDED_CSV
    return path if path.is_file() else None


def read_exclusions(folder: Path) -> tuple[Exclusion, ...]:
    """The excluded images listed beside the manifest in `folder` (empty when there is no list)."""
    path = excluded_file(folder)
    if path is None:
        return ()
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""))
    header = tuple(next(reader, ()))
    if header != EXCLUDED_COLUMNS:
        raise ManifestError(f"{path}: header {list(header)} differs from {list(EXCLUDED_COLUMNS)}; "
                            "write the manifest again")
    return tuple(Exclusion(*cells) for cells in reader if cells)


def manifest_sha256(folder: Path) -> str:
    """SHA-256 of the manifest CSV bytes in `folder`: the manifest's identity in store provenance."""
    return hashlib.sha256(_read_bytes(folder / MANIFEST_CSV)).hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """Read a manifest written by `write_manifest`, checking the CSV against the hash in the JSON.

    A JSON without `label_names` (written before datasets other than MIMIC-CXR were read) means the
    14 CheXpert labels.
    """
    json_path = folder / MANIFEST_JSON
    csv_path = folder / MANIFEST_CSV
    description = _read_description(json_path)
    csv_bytes = _read_bytes(csv_path)
    found_sha = hashlib.sha256(csv_bytes).hexdigest()
    if found_sha != description["manifest_sha256"]:
        raise ManifestError(
            f"{csv_path} does not match {json_path} (sha256 {found_sha} != {description['manifest_sha256']}); "
            "the CSV was edited or replaced: write the manifest again with `adaptor extract manifest`"
        )
    label_names = tuple(description.get("label_names", CHEXPERT_LABELS))
    return Manifest(
        dataset=description["dataset"],
        image_root=Path(description["image_root"]),
        reports_root=Path(description["reports_root"]),
        rows=_parse_rows(csv_bytes, csv_path, label_names),
        options=description["options"],
        exclusions=description["exclusions"],
        label_names=label_names,
    )


def format_label(value: float | None) -> str:
    """A label as the CSV writes it: `1.0`, `0.0`, `-1.0`, or empty when not mentioned."""
    return "" if value is None else LABEL_TEXT[value]


def parse_label(text: str) -> float | None:
    """A label cell (`1.0`, `0.0`, `-1.0`, `1`, or empty) as a float or None.

    Raises ValueError for anything else; the caller adds which file, line and column.
    """
    stripped = text.strip()
    if stripped == "":
        return None
    try:
        value = float(stripped)
    except ValueError:
        value = float("nan")
    if value not in LABEL_TEXT:
        raise ValueError(f"label value {text!r} is not one of 1.0, 0.0, -1.0 or empty")
    return value


def _csv_columns(label_names: tuple[str, ...], with_mask: bool) -> tuple[str, ...]:
    return ID_COLUMNS + label_names + ((MASK_COLUMN,) if with_mask else ())


def _csv_bytes(manifest: Manifest) -> bytes:
    with_mask = manifest.has_masks
    known = set(manifest.label_names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_csv_columns(manifest.label_names, with_mask))
    for row in manifest.rows:
        unknown = sorted(set(row.labels) - known)
        if unknown:
            raise ManifestError(
                f"row {row.dicom_id} has label(s) {unknown} that are not among the manifest's label names "
                f"{list(manifest.label_names)}"
            )
        writer.writerow(
            [row.dicom_id, row.study_id, row.subject_id, row.split.value, row.view, row.image_path,
             row.report_text, row.report_issue]
            + [format_label(row.labels.get(name)) for name in manifest.label_names]
            + ([row.mask] if with_mask else [])
        )
    return buffer.getvalue().encode("utf-8")


def _excluded_bytes(excluded: tuple[Exclusion, ...]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXCLUDED_COLUMNS)
    writer.writerows((e.dicom_id, e.study_id, e.subject_id, e.image_path, e.reason) for e in excluded)
    return buffer.getvalue().encode("utf-8")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ManifestError(f"{path} not found: build the manifest first with `adaptor extract manifest`")
    return path.read_bytes()


def _read_description(json_path: Path) -> dict[str, Any]:
    try:
        description = json.loads(_read_bytes(json_path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{json_path} is not valid JSON ({error}): write the manifest again") from error
    required = ("dataset", "image_root", "reports_root", "options", "exclusions", "manifest_sha256")
    missing = [key for key in required if key not in description]
    if missing:
        raise ManifestError(f"{json_path} lacks {', '.join(missing)}: write the manifest again")
    return description


def _parse_rows(csv_bytes: bytes, csv_path: Path, label_names: tuple[str, ...]) -> tuple[ManifestRow, ...]:
    # A report may be longer than csv's default cell limit (128 KiB); no cell is longer than the file.
    csv.field_size_limit(max(csv.field_size_limit(), len(csv_bytes)))
    reader = csv.reader(io.StringIO(csv_bytes.decode("utf-8"), newline=""))
    header = tuple(next(reader, ()))
    with_mask = header[-1:] == (MASK_COLUMN,)
    columns = _csv_columns(label_names, with_mask)
    if header != columns:
        expected = list(_csv_columns(label_names, False))
        raise ManifestError(
            f"{csv_path}: header {list(header)} differs from the expected columns {expected}"
            f" (plus {MASK_COLUMN!r} last when rows have segmentation targets)"
        )
    rows = []
    for line_number, cells in enumerate(reader, start=2):
        if len(cells) != len(columns):
            raise ManifestError(f"{csv_path} line {line_number}: {len(cells)} cells, expected {len(columns)}")
        values = dict(zip(columns, cells))
        try:
            split = Split(values["split"])
        except ValueError as error:
            raise ManifestError(f"{csv_path} line {line_number}: unknown split {values['split']!r}") from error
        labels = {name: _parse_label_cell(values[name], csv_path, line_number, name) for name in label_names}
        mask = values.get(MASK_COLUMN, "")
        if mask:
            _check_target(mask, csv_path, line_number)
        rows.append(
            ManifestRow(
                dicom_id=values["dicom_id"],
                study_id=values["study_id"],
                subject_id=values["subject_id"],
                split=split,
                view=values["view"],
                image_path=values["image_path"],
                report_text=values["report_text"],
                report_issue=values["report_issue"],
                labels=labels,
                mask=mask,
            )
        )
    return tuple(rows)


def _check_target(target: str, csv_path: Path, line_number: int) -> None:
    try:
        parse_target_header(target)
    except TargetError as error:
        raise ManifestError(f"{csv_path} line {line_number} column {MASK_COLUMN!r}: {error}") from error


def _parse_label_cell(text: str, csv_path: Path, line_number: int, column: str) -> float | None:
    try:
        return parse_label(text)
    except ValueError as error:
        raise ManifestError(f"{csv_path} line {line_number} column {column!r}: {error}") from error
