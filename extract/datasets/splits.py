"""Seeded train/validate/test splits by group (patient where the data names one), so no patient straddles splits."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from adaptor_vlp.cache_schema.manifest import Split
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError


@dataclass(frozen=True)
class SplitFractions:
    """The share of groups each split gets; the three add up to 1 and train gets some."""

    train: float
    validate: float
    test: float

    def __post_init__(self) -> None:
        values = (self.train, self.validate, self.test)
        if not all(math.isfinite(value) and value >= 0 for value in values) or not math.isclose(sum(values), 1.0):
            raise ValueError(f"split fractions {self.as_dict()} must be non-negative and add up to 1")
        if self.train == 0:
            raise ValueError(f"split fractions {self.as_dict()} leave nothing to train on")

    def as_dict(self) -> dict[str, float]:
        """The fractions by split name, for the manifest's options."""
        return {Split.TRAIN.value: self.train, Split.VALIDATE.value: self.validate, Split.TEST.value: self.test}


def held_out(validate: float, test: float = 0.0) -> SplitFractions:
    """Fractions holding out `validate` and `test` shares, train taking the rest (test 0: an official test list)."""
    if not (0 <= validate < 1 and 0 <= test < 1):
        raise ValueError(f"validation and test fractions ({validate}, {test}) must be at least 0 and below 1")
    return SplitFractions(round(1.0 - validate - test, 12), validate, test)


def split_groups(groups: Iterable[str], fractions: SplitFractions, seed: int) -> dict[str, Split]:
    """Each distinct group to a split: the sorted groups are shuffled by `seed` and cut in proportion.

    A split with a non-zero fraction gets at least one group, so tiny datasets still have every
    split; the same groups, fractions and seed always give the same assignment.
    """
    ordered = sorted(set(groups))
    sizes = {
        split: max(1, round(fraction * len(ordered))) if fraction > 0 else 0
        for split, fraction in ((Split.VALIDATE, fractions.validate), (Split.TEST, fractions.test))
    }
    if sum(sizes.values()) >= len(ordered):
        raise DownstreamLayoutError(
            f"only {len(ordered)} patients (or images) for the split fractions {fractions.as_dict()}: "
            "every split needs at least one and train needs the rest"
        )
    shuffled = [ordered[index] for index in np.random.default_rng(seed).permutation(len(ordered))]
    assignment = dict.fromkeys(shuffled[: sizes[Split.VALIDATE]], Split.VALIDATE)
    assignment.update(dict.fromkeys(shuffled[sizes[Split.VALIDATE] : sum(sizes.values())], Split.TEST))
    assignment.update(dict.fromkeys(shuffled[sum(sizes.values()) :], Split.TRAIN))
    return assignment
