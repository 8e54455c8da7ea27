"""Seeded group splits: proportions, at least one group per held-out split, determinism, clear refusals."""
from collections import Counter

import pytest

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets import DownstreamLayoutError
from adaptor_vlp.extract.datasets.splits import SplitFractions, held_out, split_groups

PATIENTS = [f"patient{index:03d}" for index in range(200)]


def test_groups_are_cut_in_proportion_and_every_group_is_assigned():
    assignment = split_groups(PATIENTS, held_out(0.15, 0.15), seed=0)
    assert set(assignment) == set(PATIENTS)
    assert Counter(assignment.values()) == {Split.TRAIN: 140, Split.VALIDATE: 30, Split.TEST: 30}


def test_same_seed_same_assignment_whatever_the_input_order_and_repeats():
    first = split_groups(PATIENTS, held_out(0.2), seed=7)
    assert split_groups(list(reversed(PATIENTS)) + PATIENTS[:5], held_out(0.2), seed=7) == first
    assert split_groups(PATIENTS, held_out(0.2), seed=8) != first
    assert Split.TEST not in first.values()


def test_tiny_datasets_still_get_every_asked_split_or_a_clear_refusal():
    assert Counter(split_groups(["a", "b", "c"], held_out(0.01, 0.01), seed=0).values()) == {
        Split.TRAIN: 1, Split.VALIDATE: 1, Split.TEST: 1}
    with pytest.raises(DownstreamLayoutError, match=r"only 2 patients \(or images\)"):
        split_groups(["a", "b"], held_out(0.15, 0.15), seed=0)


def test_fractions_must_be_usable():
    with pytest.raises(ValueError, match="add up to 1"):
        SplitFractions(0.5, 0.2, 0.2)
    with pytest.raises(ValueError, match="leave nothing to train on"):
        SplitFractions(0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least 0 and below 1"):
        held_out(-0.1)
    with pytest.raises(ValueError, match="non-negative"):
        held_out(0.6, 0.6)
    assert held_out(0.15, 0.15).as_dict() == {"train": 0.7, "validate": 0.15, "test": 0.15}
