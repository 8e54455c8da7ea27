"""Reading a downstream dataset's label tables, with errors that name the file, the line and what to do."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence, TextIO


class DownstreamLayoutError(ValueError):
    """A downstream dataset's label file is missing, lacks a column, or holds a value that cannot be read."""


def find_file(root: Path, name: str, hint: str) -> Path:
    """`root/name`, or a DownstreamLayoutError naming it with `hint` (which folder --root should be)."""
    path = root / name
    if not path.is_file():
        raise DownstreamLayoutError(f"{path} not found: {hint}")
    return path


def read_csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, the required columns' stripped values) for each data row of a CSV table.

    Header names are stripped too: SIIM's `train-rle.csv` spells its second column ' EncodedPixels'.
    """
    try:
        with _open_text(path) as stream:
            yield from _records(path, stream, required)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DownstreamLayoutError(f"{path} cannot be read as a CSV table ({error}): download it again") from error


def read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) for each non-blank line of a plain-text label file."""
    try:
        with _open_text(path) as stream:
            for line_number, line in enumerate(stream, start=1):
                if line.strip():
                    yield line_number, line.strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DownstreamLayoutError(f"{path} cannot be read as text ({error}): download it again") from error


def _records(path: Path, stream: TextIO, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(stream)
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in required if name not in header]
    if missing:
        raise DownstreamLayoutError(f"{path} lacks column(s) {', '.join(missing)}; its header is {header}")
    positions = [(name, header.index(name)) for name in required]
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):
            raise DownstreamLayoutError(
                f"{path} line {reader.line_num}: {len(cells)} cells, the header has {len(header)}"
            )
        yield reader.line_num, {name: cells[index].strip() for name, index in positions}


def _open_text(path: Path) -> TextIO:
    """Text with any byte-order mark dropped (a table saved by a spreadsheet program starts with one)."""
    return path.open(encoding="utf-8-sig", newline="")
