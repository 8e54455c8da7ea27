"""Real label files shipped with torchxrayvision (read in place, never copied into the repo) and a DICOM writer."""
import csv
import gzip
import io
import shutil
import zipfile
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from adaptor_vlp.cache_schema.manifest import Manifest
from adaptor_vlp.extract.demo.dicom import DicomIdentity, encode_dicom
from tests.extract.conftest import resave_like_a_spreadsheet

XRV_DATA = Path(find_spec("torchxrayvision").submodule_search_locations[0]) / "data"


def real_rows(name: str) -> list[list[str]]:
    """All rows (header first) of one of torchxrayvision's bundled label files, as the CSV module reads them."""
    path = XRV_DATA / name
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode("utf-8")
    else:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    return list(csv.reader(io.StringIO(text)))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)


def write_dicom(path: Path, patient_id: str, side: int = 1024, view: str = "PA") -> None:
    """A flat grey JPEG-in-DICOM radiograph of `side` x `side` pixels (compresses to almost nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((side, side), 90, dtype=np.uint8)
    identity = DicomIdentity(patient_id, view, "2.25.1", "2.25.2", f"2.25.{abs(hash(path.name)) % 10**12}")
    path.write_bytes(encode_dicom(pixels, identity))


@pytest.fixture(scope="session")
def siim_rows() -> list[list[str]]:
    return real_rows("siim-pneumothorax-train-rle.csv.gz")


@pytest.fixture(scope="session")
def rsna_rows() -> list[list[str]]:
    return real_rows("kaggle_stage_2_train_labels.csv.zip")


@pytest.fixture(scope="session")
def chexpert_rows() -> list[list[str]]:
    return real_rows("chexpert_train.csv.gz")


def assert_reads_the_same_once_resaved(read: Callable[[Path], Manifest], tree: Path, copy: Path,
                                       tables: Sequence[str]) -> None:
    """Copies `tree` to `copy`, resaves its `tables` as a spreadsheet would, and checks both read the same.

    The same rows, exclusion counts and excluded images (each listed once).
    """
    shutil.copytree(tree, copy)
    for table in tables:
        resave_like_a_spreadsheet(copy / table)
    before, after = read(tree), read(copy)
    assert after.rows == before.rows and after.exclusions == before.exclusions
    assert after.excluded == before.excluded and len(after.excluded) == sum(after.exclusions.values())
