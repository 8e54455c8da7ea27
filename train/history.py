"""A run's metrics per epoch, kept as JSONL (appendable) and CSV (for spreadsheets), and a learning-curve PNG."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Mapping

from adaptor_vlp.cache_schema.writes import write_atomically, write_text_atomically, writing

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LEARNING_CURVE_PNG = "learning_curve.png"
CURVE_KS = (1, 5, 10)

MetricsRow = Mapping[str, float]


class MetricsHistory:
    """Epoch rows of one run folder; reopening after a resume keeps only the epochs the checkpoint covers."""

    def __init__(self, run_dir: Path, keep_through_epoch: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, float]] = []
        jsonl = self.run_dir / METRICS_JSONL
        if keep_through_epoch and jsonl.is_file():
            rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
            self.rows = [row for row in rows if row["epoch"] <= keep_through_epoch]
        self._write_tables()

    def append(self, row: MetricsRow) -> None:
        """Records one epoch in the JSONL and CSV files."""
        self.rows.append(dict(row))
        self._write_tables()

    def plot(self) -> Path:
        """Draws the learning curve of the epochs so far (once per run: a plot costs more than an epoch of the demo)."""
        path = self.run_dir / LEARNING_CURVE_PNG
        plot_learning_curve(self.rows, path)
        return path

    def _write_tables(self) -> None:
        """Rewrites both tables whole, each replaced only once written (a full disk leaves the previous ones)."""
        with writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        table = io.StringIO()
        if self.rows:
            writer = csv.DictWriter(table, fieldnames=list(self.rows[0]), lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(self.rows)
        write_text_atomically(self.run_dir / METRICS_JSONL, "".join(json.dumps(row) + "\n" for row in self.rows))
        write_text_atomically(self.run_dir / METRICS_CSV, table.getvalue())


def plot_learning_curve(rows: list[dict[str, float]], path: Path) -> None:
    """Train and validation loss, and validation recall@K (mean of both directions), against epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, recall_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row["train_loss"] for row in rows], marker="o", label="train")
    loss_axes.plot(epochs, [row["val_loss"] for row in rows], marker="o", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="contrastive loss", title="Loss")
    loss_axes.legend()
    for k in CURVE_KS:
        recall_axes.plot(epochs, [row[f"val_recall@{k}"] for row in rows], marker="o", label=f"recall@{k}")
    recall_axes.set(xlabel="epoch", ylabel="recall (mean of image->text and text->image)",
                    title="Validation retrieval", ylim=(0, 1))
    recall_axes.legend()
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
