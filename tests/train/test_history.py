"""Metrics history: JSONL and CSV per epoch, a learning curve, and truncation to the resumed epoch."""
import csv
import json
from pathlib import Path

from adaptor_vlp.train.history import MetricsHistory


def row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": 3.0 / epoch, "val_loss": 3.5 / epoch,
            **{f"val_recall@{k}": min(1.0, 0.1 * k * epoch) for k in (1, 5, 10)}}


def test_rows_go_to_jsonl_and_csv_and_the_curve_to_png(tmp_path: Path) -> None:
    history = MetricsHistory(tmp_path)
    for epoch in (1, 2, 3):
        history.append(row(epoch))
    png = history.plot()

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [row(1), row(2), row(3)]
    with open(tmp_path / "metrics.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [float(r["val_loss"]) for r in table] == [row(e)["val_loss"] for e in (1, 2, 3)]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_reopening_for_a_resume_drops_epochs_after_the_checkpoint(tmp_path: Path) -> None:
    history = MetricsHistory(tmp_path)
    for epoch in (1, 2, 3):
        history.append(row(epoch))

    resumed = MetricsHistory(tmp_path, keep_through_epoch=2)
    resumed.append(row(3))

    assert [r["epoch"] for r in resumed.rows] == [1, 2, 3]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert MetricsHistory(tmp_path).rows == []  # a fresh run starts an empty history
