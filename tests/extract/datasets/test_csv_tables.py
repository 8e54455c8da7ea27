"""Dataset tables read the same however they were saved: byte-order mark, CRLF or CR, blank lines, gzip."""
import gzip
from pathlib import Path

import pytest

from adaptor_vlp.extract.datasets.csv_tables import read_csv_records, read_text_lines

PLAIN = "id,name\n1,a\n2,b\n"


class LayoutError(ValueError):
    """The reader's own error type."""


@pytest.mark.parametrize("saved", [
    PLAIN.encode(),
    ("\ufeff" + PLAIN.replace("\n", "\r\n")).encode(),
    ("\ufeff" + PLAIN.replace("\n", "\r")).encode(),
    ("id,name\n\n1,a\n  \n2,b\n,\n\n").encode(),
])
def test_the_same_records_however_the_table_was_saved(tmp_path: Path, saved: bytes) -> None:
    for path, data in ((tmp_path / "t.csv", saved), (tmp_path / "t.csv.gz", gzip.compress(saved))):
        path.write_bytes(data)
        assert [record for _, record in read_csv_records(path, ("id", "name"), LayoutError)] == \
            [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}]


def test_errors_name_the_file_and_line_in_the_readers_error_type(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name\r\n1,a\r\n2\r\n")
    with pytest.raises(LayoutError, match=f"{path} line 3: 1 cells, the header has 2"):
        list(read_csv_records(path, ("id",), LayoutError))
    with pytest.raises(LayoutError, match="lacks column\\(s\\) missing; its header is \\['id', 'name'\\]"):
        list(read_csv_records(path, ("missing",), LayoutError))


def test_text_lines_drop_the_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes("\ufeffp1 a.png normal\r\n\r\np2 b.png COVID-19\r\n   \r\n".encode())
    assert list(read_text_lines(path, LayoutError)) == [(1, "p1 a.png normal"), (3, "p2 b.png COVID-19")]
