"""Plots are drawn from result files: ROC curves, a data-efficiency curve, mask overlays and per-image Dice."""
import numpy as np

from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval
from adaptor_vlp.evaluate.plots import draw_plots
from adaptor_vlp.evaluate.results import (
    EvaluationTask,
    FeatureSpace,
    ResultRecord,
    RunContext,
    read_results,
    write_result,
)

CONTEXT = RunContext("toy-cxr", {"image": {"backbone": "toy-vit"}}, None)


def _record(task: EvaluationTask, pct: float, headline: str, point: float) -> ResultRecord:
    return ResultRecord(task=task, context=CONTEXT, feature_space=FeatureSpace.BACKBONE,
                        method="linear" if task is EvaluationTask.CLASSIFY else "decoder", split="test",
                        data_pct=pct, subset=None, seed=0, headline=headline,
                        metrics={headline: ConfidenceInterval(point, point - 0.1, point + 0.1, 0.95, 10, 0)},
                        details={})


def test_roc_efficiency_and_overlay_figures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(40, 2)).astype(float)
    scores = np.clip(targets * 0.6 + rng.random((40, 2)) * 0.5, 0, 1)
    for pct, point in ((10.0, 0.7), (100.0, 0.8)):
        write_result(_record(EvaluationTask.CLASSIFY, pct, "macro_auroc", point), tmp_path,
                     {"test_targets": targets, "test_scores": scores, "label_names": np.array(["A", "B"])})
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[:, 2:5, 2:5] = True
    write_result(_record(EvaluationTask.SEGMENT, 100.0, "dice_positive", 0.9), tmp_path,
                 {"overlay_ids": np.array(["a", "b"]), "overlay_truth": masks, "overlay_predicted": masks[:, ::-1],
                  "test_ids": np.array(["a", "b", "c"]), "test_dice": np.array([0.4, 0.9, np.nan]),
                  "test_iou": np.array([0.25, 0.8, np.nan]), "test_positive": np.array([True, True, False])})

    paths = draw_plots(read_results(tmp_path), tmp_path / "plots")

    names = sorted(path.name for path in paths)
    assert names == ["toy-cxr-classify-backbone-linear-100pct-seed0-roc.png", "toy-cxr-classify-data-efficiency.png",
                     "toy-cxr-segment-backbone-decoder-100pct-seed0-dice-per-image.png",
                     "toy-cxr-segment-backbone-decoder-100pct-seed0-overlays.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
