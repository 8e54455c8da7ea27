"""Metrics against hand-computed values, including every case that makes a metric undefined."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from adaptor_vlp.evaluate.metrics import (
    accuracy,
    auroc_report,
    binary_auroc,
    macro_auroc,
    segmentation_report,
)


def test_auroc_of_three_positives_three_negatives_with_one_inversion_is_eight_ninths():
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
    assert binary_auroc(labels, scores) == pytest.approx(8 / 9)


def test_auroc_counts_a_tied_pair_as_one_half():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.5, 0.5, 0.9, 0.1])
    assert binary_auroc(labels, scores) == pytest.approx(3.5 / 4)


def test_auroc_agrees_with_scikit_learn_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    scores = rng.integers(0, 20, size=300) + labels * 3
    assert binary_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_auroc_of_a_single_label_value_is_nan():
    assert math.isnan(binary_auroc(np.zeros(4), np.arange(4.0)))


def test_auroc_report_excludes_single_valued_class_from_macro_and_says_why():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.1, 0.4], [0.1, 0.7, 0.3], [0.2, 0.8, 0.2]])
    report = auroc_report(labels, scores, class_names=["a", "b", "c"])
    a, b, c = report.per_class
    assert (a.auroc, b.auroc) == (1.0, 0.5)
    assert math.isnan(c.auroc) and "only negatives" in c.excluded_reason
    assert (c.n_positive, c.n_negative) == (0, 4)
    assert report.excluded_from_macro == ("c",)
    assert report.macro == pytest.approx(0.75)


def test_auroc_report_leaves_unlabelled_samples_out_of_their_class_only():
    labels = np.array([[1, 1], [np.nan, 0], [0, 1], [0, 0]])
    scores = np.array([[0.9, 0.9], [0.95, 0.1], [0.1, 0.8], [0.2, 0.2]])
    report = auroc_report(labels, scores)
    assert [entry.auroc for entry in report.per_class] == [1.0, 1.0]
    assert report.per_class[0].n_negative == 2


def test_auroc_report_with_no_scorable_class_has_nan_macro():
    report = auroc_report(np.ones(5), np.arange(5.0))
    assert math.isnan(report.macro) and "only positives" in report.per_class[0].excluded_reason


def test_macro_auroc_rejects_uncertain_labels():
    with pytest.raises(ValueError, match="uncertain"):
        macro_auroc(np.array([[1.0], [-1.0]]), np.array([[0.3], [0.2]]))


def test_accuracy_counts_argmax_hits_and_breaks_ties_towards_the_lowest_class():
    labels = np.array([0, 2, 1, 1])
    scores = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    assert accuracy(labels, scores) == pytest.approx(0.75)


def test_accuracy_rejects_labels_beyond_the_score_columns():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        accuracy(np.array([0, 2]), np.zeros((2, 2)))


def _mask(*cells: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((4, 4), dtype=bool)
    for row, column in cells:
        mask[row, column] = True
    return mask


@pytest.mark.parametrize(
    ("predicted", "truth", "dice_all", "dice_positive", "false_positive_rate"),
    [
        pytest.param(
            _mask((0, 0), (0, 1)), _mask((0, 0), (0, 1), (1, 0), (1, 1)), 2 / 3, 2 / 3, math.nan,
            id="both non-empty",
        ),
        pytest.param(_mask(), _mask((0, 0)), 0.0, 0.0, math.nan, id="missed positive"),
        pytest.param(_mask((0, 0)), _mask(), 0.0, math.nan, 1.0, id="false positive on empty truth"),
        pytest.param(_mask(), _mask(), math.nan, math.nan, 0.0, id="empty on empty is not scored"),
    ],
)
def test_dice_for_each_empty_and_non_empty_combination(
    predicted, truth, dice_all, dice_positive, false_positive_rate
):
    report = segmentation_report(predicted[None], truth[None])
    assert report.dice_all == pytest.approx(dice_all, nan_ok=True)
    assert report.dice_positive == pytest.approx(dice_positive, nan_ok=True)
    assert report.empty_gt_false_positive_rate == pytest.approx(false_positive_rate, nan_ok=True)


def test_segmentation_report_over_all_four_combinations_together():
    predicted = np.stack([_mask((0, 0), (0, 1)), _mask(), _mask((0, 0)), _mask()])
    truth = np.stack([_mask((0, 0), (0, 1), (1, 0), (1, 1)), _mask((0, 0)), _mask(), _mask()])
    report = segmentation_report(predicted, truth)
    assert report.dice_positive == pytest.approx(1 / 3)
    assert report.iou_positive == pytest.approx(1 / 4)
    assert report.dice_all == pytest.approx(2 / 9)
    assert report.iou_all == pytest.approx(1 / 6)
    assert report.empty_gt_false_positive_rate == pytest.approx(1 / 2)
    assert (report.n_images, report.n_positive, report.n_empty_gt) == (4, 2, 2)
    assert report.n_empty_gt_predicted_empty == 1


def test_predicting_nothing_on_mostly_empty_data_scores_zero_dice():
    truth = np.zeros((10, 4, 4), dtype=bool)
    truth[0, 1, 1] = True
    report = segmentation_report(np.zeros_like(truth), truth)
    assert report.dice_all == 0.0 and report.dice_positive == 0.0
    assert report.n_empty_gt_predicted_empty == 9


def test_segmentation_report_rejects_probability_masks():
    with pytest.raises(ValueError, match="threshold"):
        segmentation_report(np.full((1, 2, 2), 0.7), np.zeros((1, 2, 2), dtype=bool))
