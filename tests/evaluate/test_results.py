"""Result files round-trip every field, write NaN as null, keep arrays beside them, and refuse other formats."""
import json
import math

import numpy as np
import pytest

from adaptor_vlp.evaluate.bootstrap import ConfidenceInterval
from adaptor_vlp.evaluate.results import (
    EvaluationTask,
    FeatureSpace,
    ResultError,
    ResultRecord,
    RunContext,
    read_results,
    write_result,
)

PROVENANCE = {"image": {"backbone": "toy-vit", "weights_sha256": "a" * 64}}
ADAPTOR = {"run_dir": "runs/toy", "checkpoint": "best", "weights": "runs/toy/best.safetensors",
           "weights_sha256": "f" * 64}


def _record(data_pct: float | None = 10.0, macro: float = 0.8, space: FeatureSpace = FeatureSpace.ADAPTOR,
            **overrides) -> ResultRecord:
    fields = dict(task=EvaluationTask.CLASSIFY, context=RunContext("toy-cxr", PROVENANCE, ADAPTOR),
                  feature_space=space, method="linear", split="test", data_pct=data_pct,
                  subset={"data_pct": data_pct, "seed": 3, "n_available": 100, "n_chosen": 10, "ids_sha256": "0" * 64},
                  seed=3, headline="macro_auroc",
                  metrics={"macro_auroc": ConfidenceInterval(macro, macro - 0.1, macro + 0.1, 0.95, 100, 0),
                           "auroc/Edema": ConfidenceInterval(math.nan, math.nan, math.nan, 0.95, 100, 100)},
                  details={"n_train": 10})
    return ResultRecord(**{**fields, **overrides})


def test_a_written_result_reads_back_equal_with_its_arrays(tmp_path):
    record = _record()
    path = write_result(record, tmp_path, {"test_scores": np.arange(4.0), "subset_ids": np.array(["a", "b"])})

    [stored] = read_results(tmp_path)
    assert stored.path == path == tmp_path / "toy-cxr" / "classify-adaptor-linear-10pct-seed3.json"
    assert stored.record.metrics["macro_auroc"] == record.metrics["macro_auroc"]
    assert math.isnan(stored.record.metrics["auroc/Edema"].point)
    assert stored.record.context == record.context
    assert (stored.record.data_pct, stored.record.seed, stored.record.subset) == (10.0, 3, record.subset)
    assert stored.arrays()["subset_ids"].tolist() == ["a", "b"]


def test_the_file_records_provenance_checkpoint_fraction_and_seed_as_strict_json(tmp_path):
    path = write_result(_record(), tmp_path)
    document = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))

    assert document["provenance"] == PROVENANCE
    assert document["adaptor"]["weights_sha256"] == "f" * 64
    assert (document["data_pct"], document["seed"], document["subset"]["n_chosen"]) == (10.0, 3, 10)
    assert document["metrics"]["auroc/Edema"]["point"] is None


def test_results_are_ordered_by_method_features_and_fraction(tmp_path):
    for pct in (100.0, 1.0, 10.0):
        for space in FeatureSpace:
            write_result(_record(pct, space=space), tmp_path)
    order = [(stored.record.feature_space, stored.record.data_pct) for stored in read_results(tmp_path)]
    assert order == [(space, pct) for space in (FeatureSpace.ADAPTOR, FeatureSpace.BACKBONE)
                     for pct in (1.0, 10.0, 100.0)]


def test_a_rerun_without_arrays_removes_the_stale_arrays(tmp_path):
    write_result(_record(), tmp_path, {"test_scores": np.zeros(3)})
    write_result(_record(), tmp_path)
    assert read_results(tmp_path)[0].arrays() == {}


def test_a_file_of_another_format_is_refused_naming_it(tmp_path):
    folder = tmp_path / "toy-cxr"
    folder.mkdir()
    (folder / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ResultError, match="other.json"):
        read_results(tmp_path)


def test_a_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ResultError, match="no results folder"):
        read_results(tmp_path / "absent")
