"""A tiny dataset in the cache layout: a manifest over a few JPEGs, with a missing, a corrupt and an empty case."""
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptor_vlp.cache_schema.manifest import CHEXPERT_LABELS, Manifest, ManifestRow, Split, write_manifest

N_IMAGES = 12
MISSING_ROW = 3
CORRUPT_ROW = 7
EMPTY_REPORT_STUDY = "50000002"


def _row(index: int) -> ManifestRow:
    study = f"5000{index // 2:04d}"
    split = Split.TRAIN if index < 8 else Split.VALIDATE if index < 10 else Split.TEST
    unusable = study == EMPTY_REPORT_STUDY
    return ManifestRow(
        dicom_id=f"{index:08x}-aaaaaaaa-bbbbbbbb-cccccccc-dddddddd",
        study_id=study,
        subject_id=f"1{index // 4:07d}",
        split=split,
        view="PA",
        image_path=f"files/p10/p1{index // 4:07d}/s{study}/{index:08x}.jpg",
        report_text="" if unusable else f"Heart size is {'enlarged' if index % 3 else 'normal'}. Study {index}.",
        report_issue="empty report" if unusable else "",
        labels={name: None for name in CHEXPERT_LABELS},
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Manifest]:
    """(cache dir, manifest) of a 12-image dataset named 'tiny' with three planted faults."""
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    rows = tuple(_row(i) for i in range(N_IMAGES))
    for index, row in enumerate(rows):
        path = root / row.image_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if index == MISSING_ROW:
            continue
        pixels = (rng.random((96, 80)) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(path, quality=90)
        if index == CORRUPT_ROW:
            path.write_bytes(path.read_bytes()[:200])
    manifest = Manifest(dataset="tiny", image_root=root, reports_root=root, rows=rows)
    cache = tmp_path_factory.mktemp("cache")
    write_manifest(manifest, cache / "tiny")
    return cache, manifest


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache that the code under test reads (as HF_HOME/hub would be)."""
    from huggingface_hub import constants as hub_constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def resave_like_a_spreadsheet(path: Path) -> None:
    """Rewrites a table as spreadsheet programs save it: a UTF-8 byte-order mark, CRLF line endings, and
    blank lines after the last row (for a CSV, also a row of empty cells, as spreadsheets write them).

    A `.gz` table stays gzip-compressed.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        lines = stream.read().decode("utf-8").splitlines()
    trailer = ["", "   "]
    if ".csv" in path.suffixes:
        trailer.insert(1, "," * lines[0].count(","))
    with opener(path, "wb") as stream:
        stream.write(("\ufeff" + "\r\n".join(lines + trailer) + "\r\n").encode("utf-8"))


def tree_bytes(root: Path) -> dict[Path, bytes]:
    """Every file below `root` (relative path -> bytes): two trees are equal when these are."""
    return {path.relative_to(root): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
