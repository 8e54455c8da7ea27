"""Which COVIDx label lists a folder holds: the names the COVIDx releases (and the paper's code) use.

COVIDx v9A, the release the published code reads (MGCA/mgca/constants.py:229-231), names its lists
`train_COVIDx9A.txt` / `test_COVIDx9A.txt`; other releases use `train_COVIDx<version>.txt` or plain `train.txt`
/ `test.txt`, and CXR-4 adds `val.txt`. A folder holding one list per role is read as is; `--train-file` /
`--test-file` pick one where there are several, and a missing list is one message saying what was looked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError

LIST_PATTERNS = {"train": ("train.txt", "train_COVIDx*.txt"), "test": ("test.txt", "test_COVIDx*.txt")}
VAL_FILE = "val.txt"
PUBLISHED_LISTS = ("train_COVIDx9A.txt", "test_COVIDx9A.txt")
"""The lists the published code reads."""


@dataclass(frozen=True)
class CovidxLists:
    """The label lists to read: train and test, and the validation list where the release has one."""

    train: Path
    test: Path
    val: Path | None = None

    def names(self) -> dict[str, str]:
        """Role -> file name, for the manifest's options."""
        named = {"train": self.train.name, "test": self.test.name}
        return {**named, "val": self.val.name} if self.val else named


def find_covidx_lists(root: Path, train_file: Path | None = None, test_file: Path | None = None) -> CovidxLists:
    """The lists under `root` (or the ones given, relative to `root` unless absolute)."""
    train = _given(root, train_file, "--train-file") or _found(root, "train", preferred_suffix=None)
    version = train.name.removeprefix("train")
    test = _given(root, test_file, "--test-file") or _found(root, "test", preferred_suffix=version)
    val = root / VAL_FILE
    return CovidxLists(train, test, val if val.is_file() else None)


def _given(root: Path, path: Path | None, option: str) -> Path | None:
    if path is None:
        return None
    full = path if path.is_absolute() else root / path
    if not full.is_file():
        raise DownstreamLayoutError(f"{full} ({option}) is not a file")
    return full


def _found(root: Path, role: str, preferred_suffix: str | None) -> Path:
    patterns = LIST_PATTERNS[role]
    found = sorted({path for pattern in patterns for path in root.glob(pattern) if path.is_file()})
    if preferred_suffix and len(found) > 1:
        matching = [path for path in found if path.name == f"{role}{preferred_suffix}"]
        found = matching or found
    if len(found) == 1:
        return found[0]
    option = f"--{role}-file"
    if not found:
        present = sorted(path.name for path in root.glob("*.txt"))
        raise DownstreamLayoutError(
            f"no COVIDx {role} list in {root}: looked for {' and '.join(patterns)} (COVIDx v9A, which the paper's "
            f"code reads, names it {PUBLISHED_LISTS[0 if role == 'train' else 1]}); the folder holds "
            f"{present or 'no .txt file'}. Point --root at the COVIDx folder or name the list with {option}")
    raise DownstreamLayoutError(f"several COVIDx {role} lists in {root}: {[path.name for path in found]}; "
                                f"pick one with {option}")
