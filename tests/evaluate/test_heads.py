"""Both heads learn a separable synthetic task, stay at chance on noise labels, and are seeded."""
import numpy as np
import pytest

from adaptor_vlp.evaluate.heads import C_GRID, HeadKind, LabelStructure, LinearProbe, MlpHead, fit_head
from adaptor_vlp.evaluate.metrics import accuracy, auroc_report

N_FEATURES = 16
SPLIT_SIZES = {"train": 400, "val": 150, "test": 400}


Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def _synthetic_task(kind: LabelStructure, learnable: bool, seed: int = 0) -> Splits:
    """Gaussian features whose labels follow a random linear rule, or are drawn independently."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(N_FEATURES, 3))
    splits = {}
    for split, size in SPLIT_SIZES.items():
        features = rng.normal(size=(size, N_FEATURES)).astype(np.float16)
        logits = features.astype(np.float64) @ weights if learnable else rng.normal(size=(size, 3))
        if kind is LabelStructure.MULTICLASS:
            labels = logits.argmax(axis=1)
        elif kind is LabelStructure.MULTILABEL:
            labels = (logits > 0).astype(int)
        else:
            labels = (logits[:, 0] > 0).astype(int)
        splits[split] = (features, labels)
    return splits


def _test_score(kind: LabelStructure, head: HeadKind, learnable: bool) -> float:
    """Test-split macro AUROC (multi-label, binary) or accuracy (multi-class) of a fitted head."""
    splits = _synthetic_task(kind, learnable)
    fitted = fit_head(kind, *splits["train"], *splits["val"], head=head, seed=0)
    test_x, test_y = splits["test"]
    scores = fitted.predict_scores(test_x)
    if kind is LabelStructure.MULTICLASS:
        return accuracy(test_y, scores)
    return auroc_report(test_y, scores).macro


@pytest.mark.parametrize("head", list(HeadKind))
@pytest.mark.parametrize("kind", [LabelStructure.MULTILABEL, LabelStructure.BINARY])
def test_head_separates_a_linear_rule_and_not_noise(kind, head):
    assert _test_score(kind, head, learnable=True) > 0.9
    assert abs(_test_score(kind, head, learnable=False) - 0.5) < 0.15


@pytest.mark.parametrize("head", list(HeadKind))
def test_multiclass_head_beats_one_third_chance_only_on_learnable_labels(head):
    assert _test_score(LabelStructure.MULTICLASS, head, learnable=True) > 0.8
    assert abs(_test_score(LabelStructure.MULTICLASS, head, learnable=False) - 1 / 3) < 0.15


@pytest.mark.parametrize(
    ("kind", "expected_shape"),
    [(LabelStructure.MULTILABEL, (400, 3)), (LabelStructure.MULTICLASS, (400, 3)), (LabelStructure.BINARY, (400,))],
)
@pytest.mark.parametrize("head", list(HeadKind))
def test_scores_are_probabilities_of_the_task_shape(kind, expected_shape, head):
    splits = _synthetic_task(kind, learnable=True)
    scores = fit_head(kind, *splits["train"], *splits["val"], head=head).predict_scores(splits["test"][0])
    assert scores.shape == expected_shape
    assert scores.min() >= 0 and scores.max() <= 1
    if kind is LabelStructure.MULTICLASS:
        np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)


def test_linear_probe_reports_a_grid_c_for_each_label():
    splits = _synthetic_task(LabelStructure.MULTILABEL, learnable=True)
    probe = fit_head(LabelStructure.MULTILABEL, *splits["train"], *splits["val"], head=HeadKind.LINEAR)
    assert isinstance(probe, LinearProbe)
    assert len(probe.chosen_c) == 3 and set(probe.chosen_c) <= set(C_GRID)


def test_multiclass_probe_scores_a_class_absent_from_training_as_zero():
    splits = _synthetic_task(LabelStructure.MULTICLASS, learnable=True)
    probe = fit_head(LabelStructure.MULTICLASS, *splits["train"], *splits["val"], n_classes=4)
    scores = probe.predict_scores(splits["test"][0])
    assert scores.shape == (400, 4) and not scores[:, 3].any()


def test_mlp_head_is_repeatable_with_a_seed_and_differs_with_another():
    splits = _synthetic_task(LabelStructure.BINARY, learnable=True)
    runs = [
        fit_head(LabelStructure.BINARY, *splits["train"], *splits["val"], head=HeadKind.MLP, seed=seed)
        for seed in (3, 3, 4)
    ]
    assert all(isinstance(run, MlpHead) for run in runs)
    first, again, other = (run.predict_scores(splits["test"][0]) for run in runs)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert 1 <= runs[0].training.best_epoch <= runs[0].training.epochs_run


def test_a_training_label_with_one_value_is_refused_by_name():
    splits = _synthetic_task(LabelStructure.MULTILABEL, learnable=True)
    train_x, train_y = splits["train"]
    train_y = train_y.copy()
    train_y[:, 1] = 0
    with pytest.raises(ValueError, match=r"column\(s\) \[1\]"):
        fit_head(LabelStructure.MULTILABEL, train_x, train_y, *splits["val"])


def test_features_of_the_wrong_width_are_refused():
    splits = _synthetic_task(LabelStructure.BINARY, learnable=True)
    probe = fit_head(LabelStructure.BINARY, *splits["train"], *splits["val"])
    with pytest.raises(ValueError, match=f"expects {N_FEATURES}"):
        probe.predict_scores(np.zeros((2, N_FEATURES + 1)))
