"""Bootstrap intervals: correct width on a known case, seeded, and resampling whole groups."""
import numpy as np
import pytest

from adaptor_vlp.evaluate.bootstrap import bootstrap_ci
from adaptor_vlp.evaluate.metrics import binary_auroc


def _scored_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    return labels, labels + rng.normal(scale=1.0, size=n)


def test_interval_of_a_mean_matches_the_normal_approximation():
    values = np.random.default_rng(0).normal(loc=2.0, scale=1.0, size=400)
    interval = bootstrap_ci(np.mean, values, n_resamples=2000, seed=0)
    half_width = 1.96 * values.std() / np.sqrt(values.size)
    assert interval.point == pytest.approx(values.mean())
    assert interval.low == pytest.approx(values.mean() - half_width, abs=0.02)
    assert interval.high == pytest.approx(values.mean() + half_width, abs=0.02)


def test_interval_contains_the_point_estimate_of_an_auroc():
    labels, scores = _scored_labels(200, seed=1)
    interval = bootstrap_ci(binary_auroc, labels, scores, n_resamples=300, seed=0)
    assert interval.low < interval.point < interval.high
    assert interval.n_undefined == 0


def test_same_seed_gives_the_same_interval_and_another_seed_a_different_one():
    labels, scores = _scored_labels(100, seed=2)
    first = bootstrap_ci(binary_auroc, labels, scores, n_resamples=200, seed=7)
    again = bootstrap_ci(binary_auroc, labels, scores, n_resamples=200, seed=7)
    other = bootstrap_ci(binary_auroc, labels, scores, n_resamples=200, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_groups_are_drawn_whole():
    patient = np.repeat(np.arange(20), 2)

    def every_patient_has_both_rows(drawn_patients: np.ndarray) -> float:
        return float(np.all(np.bincount(drawn_patients) % 2 == 0))

    grouped = bootstrap_ci(every_patient_has_both_rows, patient, n_resamples=100, groups=patient)
    by_row = bootstrap_ci(every_patient_has_both_rows, patient, n_resamples=100)
    assert (grouped.low, grouped.high) == (1.0, 1.0)
    assert by_row.low == 0.0


def test_resamples_where_the_metric_is_undefined_are_counted_and_left_out():
    labels = np.zeros(30, dtype=int)
    labels[0] = 1
    scores = np.linspace(0, 1, 30)
    interval = bootstrap_ci(binary_auroc, labels, scores, n_resamples=200, seed=0)
    assert 0 < interval.n_undefined < 200
    assert np.isfinite(interval.low) and np.isfinite(interval.high)


def test_arrays_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="first dimension"):
        bootstrap_ci(binary_auroc, np.zeros(3), np.zeros(4))
