"""The report puts data fractions side by side, Adaptor beside baseline, and says why a cell is empty."""
import math

from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval
from adaptor_vlp.evaluate.report import format_interval, render_tables, write_report
from adaptor_vlp.evaluate.results import EvaluationTask, FeatureSpace, ResultRecord, RunContext, write_result

IMAGE = {"image": {"dataset": "toy-cxr", "backbone": "toy-vit", "weights_id": "toy", "weights_sha256": "a" * 64,
                   "manifest_sha256": "c" * 64, "code_version": "0.1.0"}}
ADAPTOR = {"run_dir": "runs/toy-vit+toy-bert", "checkpoint": "best", "weights": "best.safetensors",
           "weights_sha256": "f" * 64}


def _interval(point: float) -> ConfidenceInterval:
    return ConfidenceInterval(point, point - 0.05, point + 0.05, 0.95, 100, 0)


def _classification(space: FeatureSpace, pct: float, point: float | None, **details) -> ResultRecord:
    metrics = {} if point is None else {"macro_auroc": _interval(point), "auroc/Edema": _interval(point)}
    return ResultRecord(task=EvaluationTask.CLASSIFY,
                        context=RunContext("toy-cxr", IMAGE, ADAPTOR if space is FeatureSpace.ADAPTOR else None),
                        feature_space=space, method="linear", split="test", data_pct=pct, subset=None, seed=0,
                        headline="macro_auroc", metrics=metrics, details=details,
                        skipped="every label takes a single value in the subset" if point is None else None)


def _records() -> list[ResultRecord]:
    return [_classification(FeatureSpace.BACKBONE, 1.0, None),
            _classification(FeatureSpace.ADAPTOR, 1.0, 0.61, labels_not_trained={"Edema": "all 2 rows negative"}),
            _classification(FeatureSpace.ADAPTOR, 10.0, 0.7),
            _classification(FeatureSpace.BACKBONE, 10.0, 0.65),
            _classification(FeatureSpace.ADAPTOR, 100.0, 0.8),
            _classification(FeatureSpace.BACKBONE, 100.0, 0.75)]


def test_fractions_are_columns_and_the_adaptor_row_precedes_its_baseline():
    text = render_tables(_records())
    assert "| method | features | 1% | 10% | 100% |" in text
    assert "| linear | toy-vit + Adaptor | 0.610 [0.560, 0.660] | 0.700 [0.650, 0.750] | 0.800 [0.750, 0.850] |" in text
    assert "| linear | toy-vit (baseline) | skipped | 0.650 [0.600, 0.700] | 0.750 [0.700, 0.800] |" in text
    assert text.index("toy-vit + Adaptor |") < text.index("toy-vit (baseline) |")


def test_notes_say_why_cells_are_missing():
    text = render_tables(_records())
    assert "at 1%, skipped (every label takes a single value in the subset): linear, toy-vit (baseline)" in text
    assert "at 1%, not trained (all 2 rows negative): Edema" in text


def test_the_largest_fraction_gets_a_per_label_table():
    text = render_tables(_records())
    assert "At 100% of the training split:" in text
    assert "| Edema | 0.800 [0.750, 0.850] | 0.750 [0.700, 0.800] |" in text


def test_undefined_values_read_as_not_available():
    assert format_interval(ConfidenceInterval(math.nan, math.nan, math.nan, 0.95, 10, 10)) == "n/a"
    assert format_interval(ConfidenceInterval(0.5, math.nan, math.nan, 0.95, 10, 10)) == "0.500"


def test_the_written_report_ends_with_the_provenance_of_stores_and_checkpoint(tmp_path):
    for record in _records():
        write_result(record, tmp_path)
    text = write_report(tmp_path).read_text()
    assert text.startswith("# Downstream evaluation")
    assert "| toy-cxr/image/toy-vit | toy | aaaaaaaaaaaa | cccccccccccc | 0.1.0 |" in text
    assert "| runs/toy-vit+toy-bert | best | ffffffffffff |" in text
