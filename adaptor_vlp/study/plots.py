"""Data-efficiency plots of a study: each task's metric against the training fraction, per image backbone.

One figure per compared task table: a panel per image backbone, a line per text encoder (with
its 95% interval as error bars), the raw-backbone baseline in black, and the published values of
the same encoder as dotted lines in the same colour. matplotlib is imported here only, when the
report is drawn.
"""
from __future__ import annotations

from pathlib import Path

from adaptor_vlp.study.report import BASELINE_ROW, PLOTS_FOLDER, CellStatus, StudyReport, TaskTable


def draw_study_plots(report: StudyReport) -> list[Path]:
    """Writes OUT/plots/<task>-data-efficiency.png for every task with a computed cell; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    folder = report.plan.spec.out / PLOTS_FOLDER
    paths = []
    for table in report.tables:
        if not table.compared or not any(cell.status is CellStatus.COMPUTED for cell in table.cells.values()):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(_figure(pyplot, table, folder / f"{table.task.name}-data-efficiency.png"))
    return paths


def _figure(pyplot, table: TaskTable, path: Path) -> Path:
    fractions = table.task.fractions
    figure, axes = pyplot.subplots(1, len(table.images), figsize=(4.2 * len(table.images), 3.8), squeeze=False,
                                   sharey=True)
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, image in zip(axes[0], table.images):
        for index, row in enumerate(table.rows):
            colour = "black" if row == BASELINE_ROW else colours[index % len(colours)]
            cells = [table.cells[(row, image, fraction)] for fraction in fractions]
            computed = [(fraction, cell) for fraction, cell in zip(fractions, cells)
                        if cell.status is CellStatus.COMPUTED]
            if computed:
                x = [fraction for fraction, _ in computed]
                y = [cell.value for _, cell in computed]
                errors = [[cell.value - (cell.low if cell.low is not None else cell.value) for _, cell in computed],
                          [(cell.high if cell.high is not None else cell.value) - cell.value for _, cell in computed]]
                panel.errorbar(x, y, yerr=errors, marker="o", capsize=3, color=colour,
                               linestyle="--" if row == BASELINE_ROW else "-",
                               label=table.row_label(row))
            published = [(fraction, cell.published) for fraction, cell in zip(fractions, cells)
                         if cell.published is not None]
            if published:
                panel.plot([fraction for fraction, _ in published], [value for _, value in published], color=colour,
                           linestyle=":", marker="x", label=f"{row} (published)")
        panel.set(xscale="log", xticks=list(fractions), xticklabels=[f"{fraction:g}%" for fraction in fractions],
                  xlabel="share of the training split", title=image)
        panel.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{table.metric.value} (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"{table.task.title}: {table.metric.title}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path
