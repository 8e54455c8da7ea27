"""COVIDx lists are found under the names the releases use; a missing or ambiguous list says what was looked for."""
from __future__ import annotations

import pytest

from adaptor_vlp.extract.datasets.covidx_files import find_covidx_lists
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError


def _touch(root, *names):
    for name in names:
        (root / name).write_text("p1 a.png normal\n")


def test_the_v9a_lists_the_paper_reads_are_found(tmp_path):
    _touch(tmp_path, "train_COVIDx9A.txt", "test_COVIDx9A.txt")

    lists = find_covidx_lists(tmp_path)

    assert lists.names() == {"train": "train_COVIDx9A.txt", "test": "test_COVIDx9A.txt"}


def test_plain_names_and_a_validation_list_are_found(tmp_path):
    _touch(tmp_path, "train.txt", "test.txt", "val.txt")

    assert find_covidx_lists(tmp_path).names() == {"train": "train.txt", "test": "test.txt", "val": "val.txt"}


def test_the_test_list_of_the_train_lists_version_wins_and_options_override(tmp_path):
    _touch(tmp_path, "train_COVIDx9A.txt", "test_COVIDx9A.txt", "test_COVIDx9B.txt", "train_COVIDx9B.txt")

    with pytest.raises(DownstreamLayoutError, match=r"several COVIDx train lists.*--train-file"):
        find_covidx_lists(tmp_path)
    lists = find_covidx_lists(tmp_path, train_file=tmp_path / "train_COVIDx9B.txt")
    assert lists.names() == {"train": "train_COVIDx9B.txt", "test": "test_COVIDx9B.txt"}


def test_a_missing_list_names_the_patterns_looked_for_and_the_files_there(tmp_path):
    _touch(tmp_path, "train_COVIDx9A.txt", "labels.txt")

    with pytest.raises(DownstreamLayoutError, match=r"no COVIDx test list.*test.txt and test_COVIDx\*.txt.*"
                                                    r"test_COVIDx9A.txt.*\['labels.txt', 'train_COVIDx9A.txt'\]"):
        find_covidx_lists(tmp_path)
