"""Read COVIDx CXR into a `Manifest` whose labels are its classes, one-hot.

Layout (the COVID-Net project's): a train and a test list, named by the release (`train_COVIDx9A.txt` /
`test_COVIDx9A.txt` for v9A, the files the paper's code reads; `train.txt` / `test.txt` for others; see
`covidx_files`), COVIDx CXR-4 adds `val.txt`; one image per line with space-separated patient id, file
name, class and data source; the images in `train/`, `test/` (and `val/`). Two class vocabularies exist:

- COVIDx v1 to v9 (e.g. `train_COVIDx9A.txt`): normal, pneumonia, COVID-19: the 3-class task the
  Adaptor paper (after MGCA) reports accuracy on; label names ("normal", "pneumonia", "COVID-19");
- COVIDx CXR-2, -3 and -4: positive, negative (for COVID-19); label names ("negative", "positive").

Splits: `test.txt` is the test split; `val.txt` the validation split where it exists, else a
share of the training patients drawn with a fixed seed (MGCA draws 20% of the images instead,
which lets a patient's images straddle train and validation).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptor_vlp.cache_schema.manifest import Exclusion, Manifest, ManifestRow, Split
from adaptor_vlp.extract.datasets.covidx_files import find_covidx_lists
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError, read_text_lines
from adaptor_vlp.extract.datasets.rows import IMAGE_MISSING, image_row, require_images
from adaptor_vlp.extract.datasets.splits import held_out, split_groups

DATASET = "covidx"
THREE_CLASSES: tuple[str, ...] = ("normal", "pneumonia", "COVID-19")
TWO_CLASSES: tuple[str, ...] = ("negative", "positive")
VOCABULARIES = (THREE_CLASSES, TWO_CLASSES)
TRAIN, VAL, TEST = "train", "val", "test"
"""The lists' roles; each role's images lie in the folder of that name."""
DEFAULT_VAL_FRACTION = 0.2
"""Share of training patients held out for validation when there is no `val.txt` (MGCA holds out 20%)."""
DUPLICATE_FILE_NAME = "file name listed earlier"
NON_ASCII_NAME = "non-ASCII file name (cache ids are ASCII)"


@dataclass(frozen=True)
class _Entry:
    """One line of a label file."""

    label_file: Path
    role: str
    line_number: int
    patient: str
    file_name: str
    class_name: str

    @property
    def image_path(self) -> str:
        return f"{self.role}/{self.file_name}"


def read_covidx(root: Path, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0,
                train_file: Path | None = None, test_file: Path | None = None) -> Manifest:
    """One row per listed image found on disk: train (or validate) from the train list, validate from val.txt, test.

    Images missing on disk, listed twice, or with a non-ASCII name are left out and listed in `excluded`. All
    label files must use one class vocabulary; the manifest's label names are its classes. `train_file` /
    `test_file` pick the lists where the folder holds several (relative to `root` unless absolute).
    """
    fractions = held_out(val_fraction)
    lists = find_covidx_lists(root, train_file, test_file)
    files = {role: path for role, path in ((TRAIN, lists.train), (VAL, lists.val), (TEST, lists.test)) if path}
    entries = {role: [_entry(path, role, number, line) for number, line in read_text_lines(path)]
               for role, path in files.items()}
    classes = _vocabulary([entry for listed in entries.values() for entry in listed])
    excluded: list[Exclusion] = []
    kept = _kept_entries(root, entries, excluded)
    require_images(len(kept[TRAIN]), files[TRAIN], excluded)
    if VAL in kept:
        train_splits = {entry.patient: Split.TRAIN for entry in kept[TRAIN]}
    else:
        train_splits = split_groups((entry.patient for entry in kept[TRAIN]), fractions, seed)
    rows = [_row(entry, train_splits[entry.patient], classes) for entry in kept[TRAIN]]
    rows += [_row(entry, Split.VALIDATE, classes) for entry in kept.get(VAL, [])]
    rows += [_row(entry, Split.TEST, classes) for entry in kept[TEST]]
    options = {
        "classes": list(classes),
        "validation": lists.val.name if lists.val else {"val_fraction": val_fraction, "seed": seed},
        "label_files": lists.names(),
        "split_unit": "patient",
    }
    return Manifest(DATASET, root, root, tuple(rows), options, label_names=classes, excluded=tuple(excluded))


def _entry(label_file: Path, role: str, line_number: int, line: str) -> _Entry:
    """Patient id, file name, class[, source]; a file name with spaces keeps them (the class ends the name)."""
    tokens = line.split()
    has_source = len(tokens) >= 4 and not _is_class(tokens[-1])
    name_end = len(tokens) - (2 if has_source else 1)
    if len(tokens) < 3 or name_end < 2:
        raise DownstreamLayoutError(
            f"{label_file} line {line_number}: {line!r} is not 'patient-id file-name class [source]'"
        )
    return _Entry(label_file, role, line_number, tokens[0], " ".join(tokens[1:name_end]), tokens[name_end])


def _is_class(token: str) -> bool:
    return any(token.lower() == name.lower() for vocabulary in VOCABULARIES for name in vocabulary)


def _vocabulary(entries: list[_Entry]) -> tuple[str, ...]:
    """The one class vocabulary every entry's class belongs to (the first entry's decides)."""
    if not entries:
        raise DownstreamLayoutError("the COVIDx label files list no images")
    for vocabulary in VOCABULARIES:
        if _canonical(entries[0].class_name, vocabulary):
            break
    else:
        vocabulary = ()
    for entry in entries:
        if not _canonical(entry.class_name, vocabulary):
            raise DownstreamLayoutError(
                f"{entry.label_file} line {entry.line_number}: class {entry.class_name!r} is not one of "
                f"{', '.join(vocabulary) or 'the known classes'}; COVIDx files use either "
                f"{'/'.join(THREE_CLASSES)} or {'/'.join(TWO_CLASSES)}, one vocabulary for all files"
            )
    return vocabulary


def _canonical(class_name: str, vocabulary: tuple[str, ...]) -> str:
    """The vocabulary's spelling of `class_name` (matched ignoring case), or "" when it is not in it."""
    return next((name for name in vocabulary if name.lower() == class_name.lower()), "")


def _kept_entries(root: Path, entries: dict[str, list[_Entry]], excluded: list[Exclusion]) -> dict[str, list[_Entry]]:
    """Each label file's usable entries; a file name listed again (in any file, in train, val, test
    order) is dropped after its first listing, as image ids must be unique."""
    seen: set[str] = set()
    kept: dict[str, list[_Entry]] = {}
    for name, listed in entries.items():
        kept[name] = []
        for entry in listed:
            if not entry.file_name.isascii():
                reason = NON_ASCII_NAME
            elif entry.file_name in seen:
                reason = DUPLICATE_FILE_NAME
            elif not os.path.isfile(root / entry.image_path):
                reason = IMAGE_MISSING
            else:
                seen.add(entry.file_name)
                kept[name].append(entry)
                continue
            excluded.append(Exclusion(entry.file_name, entry.file_name, entry.patient, entry.image_path, reason))
    return kept


def _row(entry: _Entry, split: Split, classes: tuple[str, ...]) -> ManifestRow:
    found = _canonical(entry.class_name, classes)
    labels = {name: 1.0 if name == found else 0.0 for name in classes}
    return image_row(entry.file_name, entry.file_name, entry.patient, split, "", entry.image_path, labels)
