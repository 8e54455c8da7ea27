"""Percentile bootstrap confidence intervals for any scalar metric, seeded and reproducible."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class ConfidenceInterval:
    """A metric's value on the full set and its percentile bootstrap interval.

    Resamples on which the metric is undefined (NaN, e.g. a resample holding no positive) are
    left out of the percentiles and counted in `n_undefined`; `low` and `high` are NaN when
    every resample was undefined.
    """

    point: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n_undefined: int


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: np.ndarray | None = None,
) -> ConfidenceInterval:
    """Evaluates `metric_fn(*arrays)` and its bootstrap interval over the arrays' first axis.

    All arrays are resampled together, row for row. With `groups` (one id per row, e.g. the
    patient), whole groups are drawn with replacement so that rows of one patient stay
    together; without it every row is drawn on its own.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    arrays = tuple(np.asarray(array) for array in arrays)
    n_rows = len(arrays[0])
    if n_rows == 0:
        raise ValueError("cannot bootstrap an empty set: the arrays have no rows")
    lengths = {len(array) for array in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays must share their first dimension, got lengths {sorted(lengths)}")
    group_of_row = np.arange(n_rows) if groups is None else _group_index(groups, n_rows)
    draw = _GroupSampler(group_of_row, np.random.default_rng(seed))
    point = float(metric_fn(*arrays))
    values = np.array(
        [float(metric_fn(*(array[rows] for array in arrays))) for rows in draw.resamples(n_resamples)]
    )
    defined = values[~np.isnan(values)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail]) if defined.size else (np.nan, np.nan)
    return ConfidenceInterval(
        point=point,
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        n_undefined=int(values.size - defined.size),
    )


class _GroupSampler:
    """Draws row indices by sampling groups with replacement and taking all rows of each."""

    def __init__(self, group_of_row: np.ndarray, rng: np.random.Generator) -> None:
        self._rows_by_group = np.argsort(group_of_row, kind="stable")
        self._group_sizes = np.bincount(group_of_row)
        self._group_starts = np.cumsum(self._group_sizes) - self._group_sizes
        self._rng = rng

    def resamples(self, count: int) -> Iterator[np.ndarray]:
        n_groups = self._group_sizes.size
        for _ in range(count):
            chosen = self._rng.integers(0, n_groups, size=n_groups)
            sizes = self._group_sizes[chosen]
            ends = np.cumsum(sizes)
            offsets = np.arange(ends[-1]) - np.repeat(ends - sizes, sizes)
            yield self._rows_by_group[np.repeat(self._group_starts[chosen], sizes) + offsets]


def _group_index(groups: np.ndarray, n_rows: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"groups must hold one id per row ({n_rows}), got shape {groups.shape}")
    return np.unique(groups, return_inverse=True)[1].ravel()
