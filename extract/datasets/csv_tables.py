"""The label and metadata tables datasets ship, read the same however they were saved.

Every dataset reader (MIMIC-CXR, CheXpert, RSNA, COVIDx, SIIM) reads its tables through here, so
a table re-saved by a spreadsheet program reads as the original: a UTF-8 byte-order mark is
dropped, CRLF (or CR) line endings read as LF, and blank lines (empty, spaces only, or cells that
are all empty, as spreadsheets write after the last row) are skipped wherever they are.
Gzip-compressed tables (`.gz`, as PhysioNet ships MIMIC-CXR's) are read the same way. Errors name
the file and the line, in the reader's own error type.
"""
from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import Iterator, Sequence, TextIO

TABLE_ENCODING = "utf-8-sig"
"""UTF-8, with a leading byte-order mark dropped when there is one."""


def read_csv_records(path: Path, required: Sequence[str],
                     error: type[Exception]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, the required columns' stripped values) for each data row of a CSV table.

    Header names are stripped too (SIIM's `train-rle.csv` spells its second column ' EncodedPixels').
    `error` is raised, naming the file and line, for a missing column or a row of the wrong width.
    """
    try:
        with open_table(path) as stream:
            yield from _records(path, stream, required, error)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as problem:
        raise error(f"{path} cannot be read as a CSV table ({problem}): download it again") from problem


def read_text_lines(path: Path, error: type[Exception]) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) for each non-blank line of a plain-text table."""
    try:
        with open_table(path) as stream:
            for line_number, line in enumerate(stream, start=1):
                if line.strip():
                    yield line_number, line.strip()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as problem:
        raise error(f"{path} cannot be read as text ({problem}): download it again") from problem


def open_table(path: Path) -> TextIO:
    """A table as text (gunzipped when it ends in .gz), byte-order mark dropped, line endings left to csv."""
    if Path(path).suffix == ".gz":
        return gzip.open(path, "rt", encoding=TABLE_ENCODING, newline="")
    return open(path, encoding=TABLE_ENCODING, newline="")


def _records(path: Path, stream: TextIO, required: Sequence[str],
             error: type[Exception]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(stream)
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in required if name not in header]
    if missing:
        raise error(f"{path} lacks column(s) {', '.join(missing)}; its header is {header}")
    positions = [(name, header.index(name)) for name in required]
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise error(f"{path} line {reader.line_num}: {len(cells)} cells, the header has {len(header)}")
        yield reader.line_num, {name: cells[index].strip() for name, index in positions}
