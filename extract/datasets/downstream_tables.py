"""Reading a downstream dataset's label tables, with errors that name the file, the line and what to do."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from adaptor_vlp.extract.datasets import csv_tables


class DownstreamLayoutError(ValueError):
    """A downstream dataset's label file is missing, lacks a column, or holds a value that cannot be read."""


def find_file(root: Path, name: str, hint: str) -> Path:
    """`root/name`, or a DownstreamLayoutError naming it with `hint` (which folder --root should be)."""
    path = root / name
    if not path.is_file():
        raise DownstreamLayoutError(f"{path} not found: {hint}")
    return path


def read_csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, the required columns' stripped values) for each data row (see `csv_tables`)."""
    return csv_tables.read_csv_records(path, required, DownstreamLayoutError)


def read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) for each non-blank line of a plain-text label file."""
    return csv_tables.read_text_lines(path, DownstreamLayoutError)
