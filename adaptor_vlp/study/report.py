"""The study's report: one table per downstream task in the paper's shape, beside the published values.

Rows are the text encoders and a raw-backbone baseline row, column groups the image backbones,
columns the training fractions. A computed cell holds the metric in percent with its 95%
bootstrap interval (with several seeds: the mean, the standard deviation over seeds and the mean
interval), then the published value and the difference (this study minus published, in points).
A cell that was not computed says why (left out by the spec, cannot run, failed, not run yet, or
the head could not be trained); nothing is ever filled in. Then the other published methods for
context, data-efficiency plots, and the cost of every step (from the runner's log).

Everything comes from files: the spec, the result files the heads wrote, the stages' records
(step states) and the runner's log. The report is written as Markdown and as JSON.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

from adaptor_vlp.study.log import LogEntry, Outcome, RunLog
from adaptor_vlp.study.plan import StudyPlan, head_key
from adaptor_vlp.study.protocol_notes import protocol_lines, trivial_score_line
from adaptor_vlp.study.spec import Metric, TaskKind, TaskSpec
from adaptor_vlp.study.steps import HeadStep, Status, StepKind, StepState

REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
PLOTS_FOLDER = "plots"
BASELINE_ROW = "baseline"
"""The row of heads on the raw image backbone's features (no Adaptor)."""


class CellStatus(str, Enum):
    """Whether a cell holds a number this study computed."""

    COMPUTED = "computed"
    NOT_COMPUTED = "not computed"
    LEFT_OUT = "left out"


@dataclass(frozen=True)
class Cell:
    """One (row, image backbone, fraction) cell: this study's value in percent, or why there is none; the
    published value beside it."""

    status: CellStatus
    value: float | None = None
    low: float | None = None
    high: float | None = None
    seed_sd: float | None = None
    seeds: tuple[int, ...] = ()
    seed_values: tuple[float, ...] = ()
    published: float | None = None
    reason: str | None = None

    @property
    def difference(self) -> float | None:
        """This study minus published, in percentage points, where both exist."""
        if self.value is None or self.published is None:
            return None
        return self.value - self.published

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value, "seeds": list(self.seeds),
                "seed_values": list(self.seed_values), "difference": self.difference}


@dataclass(frozen=True)
class TaskTable:
    """One task's table for one metric: cells by (row, image backbone, fraction)."""

    task: TaskSpec
    metric: Metric
    rows: tuple[str, ...]
    images: tuple[str, ...]
    cells: Mapping[tuple[str, str, float], Cell]
    compared: bool
    """True when this table is the one compared with published values."""
    text_entries: Mapping[str, str] = field(default_factory=dict)
    """Rows whose cells read Adaptors trained on another text entry under this task's protocol: row -> entry."""

    def row_label(self, row: str) -> str:
        """How the table and its plot name a row: the baseline said in words, a row read through another text
        entry with that entry."""
        if row == BASELINE_ROW:
            return "baseline (raw backbone, no Adaptor)"
        return f"{row} (as {self.text_entries[row]})" if row in self.text_entries else row


@dataclass(frozen=True)
class StepCost:
    """One step's wall time from the runner's log (its last successful run), or None when it has no entry."""

    key: str
    kind: StepKind
    status: Status
    seconds: float | None
    started: str | None
    failed_attempts: int
    failed_seconds: float


@dataclass(frozen=True)
class StudyReport:
    """Everything the report shows."""

    plan: StudyPlan
    tables: tuple[TaskTable, ...]
    costs: tuple[StepCost, ...]
    generated: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def total_seconds(self) -> float:
        return sum(cost.seconds or 0.0 for cost in self.costs) + sum(cost.failed_seconds for cost in self.costs)


def build_report(plan: StudyPlan, states: Mapping[str, StepState] | None = None) -> StudyReport:
    """The report of a study from its records: result files, step states and the runner's log."""
    states = plan.states() if states is None else states
    latest = RunLog(plan.spec.out).latest()
    heads = {step.key: step for step in plan.head_steps()}
    tables = []
    for task in plan.spec.tasks:
        tables.append(_task_table(plan, task, task.metric, heads, states, latest,
                                  compared=task.compared_with_published))
        for metric in _also_reported(task, plan.spec.datasets[task.dataset].layout.value):
            tables.append(_task_table(plan, task, metric, heads, states, latest, compared=False))
    return StudyReport(plan, tuple(tables), _costs(plan, states))


def _also_reported(task: TaskSpec, layout: str) -> tuple[Metric, ...]:
    """The task's other tables: its protocol's `also_report` metrics, or (no protocol) Dice over positives."""
    if task.protocol is not None:
        return tuple(Metric(metric.value) for metric in task.protocol_task(layout).also_report)
    if task.kind is TaskKind.SEGMENT and task.metric is not Metric.DICE_POSITIVE:
        return (Metric.DICE_POSITIVE,)
    return ()


def write_report(report: StudyReport, plots: Sequence[Path] = ()) -> tuple[Path, Path]:
    """Writes OUT/report.md and OUT/report.json; returns their paths."""
    out = report.plan.spec.out
    out.mkdir(parents=True, exist_ok=True)
    markdown, document = out / REPORT_MARKDOWN, out / REPORT_JSON
    markdown.write_text(render_markdown(report, plots, out), encoding="utf-8")
    document.write_text(json.dumps(report_json(report, plots), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return markdown, document


def render_markdown(report: StudyReport, plots: Sequence[Path] = (), relative_to: Path | None = None,
                    with_step_costs: bool = True) -> str:
    """The report as Markdown: task tables, other published methods, plots, cost."""
    spec = report.plan.spec
    parts = [f"# Study {spec.name}\n",
             f"Spec `{spec.path}`; cache `{spec.cache}`; results `{spec.results_dir}`. Generated {report.generated}.\n",
             _legend(report)]
    for table in report.tables:
        parts.append(_render_table(table, report))
    if spec.published is not None and spec.published.methods:
        parts.append(_render_methods(report))
    if plots:
        base = relative_to or spec.out
        parts.append("## Data efficiency\n\n" + "\n".join(
            f"![{plot.stem}]({plot.relative_to(base).as_posix() if plot.is_relative_to(base) else plot})"
            for plot in plots) + "\n")
    parts.append(_render_costs(report, with_step_costs))
    return "\n".join(parts)


def report_json(report: StudyReport, plots: Sequence[Path] = ()) -> dict[str, Any]:
    """The report as a JSON document (NaN-free): every cell with its status, value, interval, published value,
    difference and reason; the other methods; the cost of every step."""
    spec = report.plan.spec
    published = spec.published
    return {
        "study": spec.name,
        "spec": str(spec.path),
        "generated": report.generated,
        "published_source": None if published is None else published.source,
        "published_note": None if published is None else published.note,
        "tables": [{
            "task": table.task.name,
            "spec_task": table.task.spec_name,
            "protocol": None if table.task.protocol is None else table.task.protocol.name,
            "title": table.task.title,
            "dataset": table.task.dataset,
            "metric": table.metric.value,
            "metric_title": table.metric.title,
            "compared_with_published": table.compared,
            "fractions": list(table.task.fractions),
            "images": list(table.images),
            "rows": list(table.rows),
            "text_entries": dict(table.text_entries),
            "cells": [{"row": row, "image": image, "fraction": fraction, **cell.to_json()}
                      for (row, image, fraction), cell in table.cells.items()],
        } for table in report.tables],
        "other_methods": [] if published is None else [
            {"name": method.name, "trainable_parameters": method.trainable_parameters,
             "results": {task: list(values) for task, values in method.values.items()}}
            for method in published.methods],
        "plots": [str(plot) for plot in plots],
        "cost": {
            "total_seconds": report.total_seconds,
            "by_kind": _costs_by_kind(report),
            "steps": [{**asdict(cost), "kind": cost.kind.value, "status": cost.status.value} for cost in report.costs],
        },
    }


def _task_table(plan: StudyPlan, task: TaskSpec, metric: Metric, heads: Mapping[str, HeadStep],
                states: Mapping[str, StepState], latest: Mapping[str, LogEntry], compared: bool) -> TaskTable:
    spec = plan.spec
    rows = (*spec.text_backbones, BASELINE_ROW)
    cells = {}
    for image in spec.image_backbones:
        for row in rows:
            text = None if row == BASELINE_ROW else row
            for fraction in task.fractions:
                published = (spec.published.value(task, image, text, fraction)
                             if compared and spec.published is not None and text is not None else None)
                left_out = task.left_out_reason(image)
                if left_out is not None:
                    cells[(row, image, fraction)] = Cell(CellStatus.LEFT_OUT, published=published, reason=left_out)
                    continue
                entry = None if text is None else spec.text_entry(task, text)
                steps = [heads[head_key(task, image, entry, fraction, seed)] for seed in task.seeds]
                cells[(row, image, fraction)] = _cell(plan, steps, metric, states, latest, published)
    entries = {row: spec.text_entry(task, row) for row in spec.text_backbones if spec.text_entry(task, row) != row}
    return TaskTable(task, metric, rows, spec.image_backbones, cells, compared, entries)


def _cell(plan: StudyPlan, steps: Sequence[HeadStep], metric: Metric, states: Mapping[str, StepState],
          latest: Mapping[str, LogEntry], published: float | None) -> Cell:
    """A cell from its seeds' head steps: the computed seeds' values, or the first seed's reason for having none."""
    values, lows, highs, seeds, reasons = [], [], [], [], []
    for step in steps:
        state = states[step.key]
        stored = step.result() if state.status is Status.DONE else None
        if stored is None:
            reasons.append(_missing_reason(plan, step.key, states, latest))
            continue
        interval = stored.record.metrics.get(metric.result_key)
        if stored.record.skipped:
            reasons.append(f"the head could not be trained: {stored.record.skipped}")
        elif interval is None or math.isnan(interval.point):
            reasons.append(f"{metric.value} is undefined on this test split")
        else:
            values.append(100 * interval.point)
            lows.append(100 * interval.low if not math.isnan(interval.low) else math.nan)
            highs.append(100 * interval.high if not math.isnan(interval.high) else math.nan)
            seeds.append(step.seed)
    if not values:
        return Cell(CellStatus.NOT_COMPUTED, published=published, reason=reasons[0])
    reason = None if not reasons else f"{len(values)} of {len(steps)} seeds computed; another: {reasons[0]}"
    return Cell(CellStatus.COMPUTED, value=statistics.fmean(values), low=_mean_or_none(lows), high=_mean_or_none(highs),
                seed_sd=statistics.stdev(values) if len(values) > 1 else None, seeds=tuple(seeds),
                seed_values=tuple(values), published=published, reason=reason)


def _missing_reason(plan: StudyPlan, key: str, states: Mapping[str, StepState],
                    latest: Mapping[str, LogEntry]) -> str:
    """Why a step has no result: it cannot run, it (or a step it needs) failed, or it has not run yet."""
    if states[key].status is Status.BLOCKED:
        return f"cannot run: {states[key].detail}"
    failed = _failed_step(plan, key, states, latest)
    if failed == key:
        return f"failed: {latest[key].detail}"
    if failed is not None:
        return f"not run: it needs {failed}, which failed: {latest[failed].detail}"
    return "not run yet (run `adaptor study run`)"


def _failed_step(plan: StudyPlan, key: str, states: Mapping[str, StepState],
                 latest: Mapping[str, LogEntry]) -> str | None:
    """The step itself, or the first step it needs (directly or not), that is not done and last failed."""
    entry = latest.get(key)
    if states[key].status is not Status.DONE and entry is not None and entry.outcome is Outcome.FAILED:
        return key
    for dependency in plan.step(key).depends_on:
        if states[dependency].status is not Status.DONE:
            found = _failed_step(plan, dependency, states, latest)
            if found is not None:
                return found
    return None


def _mean_or_none(values: list[float]) -> float | None:
    finite = [value for value in values if math.isfinite(value)]
    return statistics.fmean(finite) if len(finite) == len(values) and finite else None


def _legend(report: StudyReport) -> str:
    spec = report.plan.spec
    lines = ["Each cell: this study's value in percent on the test split, with its 95% bootstrap interval over "
             "patients; with several seeds, the mean ± the standard deviation over seeds and the mean interval. "
             "Columns are the share of the training split the head was fitted on. The baseline row fits the same "
             "head on the raw image backbone's features (no Adaptor)."]
    if spec.published is not None:
        lines.append(f"Where a published value exists it follows as `pub. P, Δ D` (D = this study minus published, "
                     f"in points). Published values are copied from: {spec.published.source}.")
        if spec.published.note:
            lines.append(spec.published.note)
    lines.append("A cell without a number says why in the notes under its table; no cell is ever filled in.")
    return "\n\n".join(lines) + "\n"


def _render_table(table: TaskTable, report: StudyReport) -> str:
    task = table.task
    heading = f"## {task.title}: {table.metric.title}\n"
    if not table.compared and task.compared_with_published and table.metric is Metric.DICE_POSITIVE:
        heading += ("\nThis project's headline Dice, over test images with a finding; the published tables have no "
                    "counterpart.\n")
    elif not task.compared_with_published:
        heading += (f"\nUnder the {task.protocol.name} protocol: not comparable with the published values, which "
                    "come from the published protocol's table of this task.\n")
    for row, entry in table.text_entries.items():
        heading += (f"\nThe {row} row reads Adaptors trained on `{entry}`, the text entry the "
                    f"{task.protocol.name} protocol reads for it (the spec's [backbones.text_by_protocol]).\n")
    notes: dict[str, int] = {}
    header = ["text encoder"] + [f"{image} {fraction:g}%" for image in table.images for fraction in task.fractions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        label = table.row_label(row)
        cells = [_cell_text(table.cells[(row, image, fraction)], notes)
                 for image in table.images for fraction in task.fractions]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    text = heading + "\n" + "\n".join(lines) + "\n"
    extra = _task_notes(table, report)
    if notes or extra:
        text += "\nNotes:\n\n" + "\n".join([f"{number}. {reason}" for reason, number in notes.items()] + extra) + "\n"
    return text


def _cell_text(cell: Cell, notes: dict[str, int]) -> str:
    published = "" if cell.published is None else f"; pub. {cell.published:.1f}"
    if cell.status is not CellStatus.COMPUTED:
        number = notes.setdefault(cell.reason or "", len(notes) + 1)
        return f"{cell.status.value} ({number}){published}"
    text = f"{cell.value:.1f}"
    if cell.seed_sd is not None:
        text += f" ± {cell.seed_sd:.1f}"
    if cell.low is not None and cell.high is not None:
        text += f" [{cell.low:.1f}, {cell.high:.1f}]"
    if cell.published is not None:
        text += f"; pub. {cell.published:.1f}, Δ {cell.difference:+.1f}"
    if cell.reason:
        text += f" ({notes.setdefault(cell.reason, len(notes) + 1)})"
    return text


def _task_notes(table: TaskTable, report: StudyReport) -> list[str]:
    """The published source's note on the task, what a trivial predictor scores, the protocol's faults."""
    extra = []
    spec = report.plan.spec
    published = spec.published
    if table.compared and published is not None and table.task.spec_name in published.task_notes:
        extra.append(f"- On the published values: {published.task_notes[table.task.spec_name]}")
    layout = spec.datasets[table.task.dataset].layout.value
    if table.task.kind is TaskKind.SEGMENT:
        extra.append(segmentation_input_line(table.task, layout))
    for image in table.task.unet:
        extra.append(f"- {image}: segmented as the paper did, by the published ResNet-AE U-Net over the encoder's "
                     "four intermediate maps, cached (`extract images --feature-maps`) instead of recomputed: the "
                     "maps are the float16 rounding of the encoder's output, and the Adaptor embeds each image's "
                     "pooled code on its own (the published one read a batch as one sequence)"
                     + (f"; the decoder's widths are the published ones / {table.task.unet_width_divisor}"
                        if table.task.unet_width_divisor > 1 else "") + ".")
    trivial = trivial_score_line(table.metric, _details(report, table.task))
    if trivial:
        extra.append(trivial)
    if table.metric is table.task.metric:
        extra += protocol_lines(table.task, layout, spec.cache)
    return extra


def segmentation_input_line(task: TaskSpec, layout: str) -> str:
    """What the decoders of a segmentation task read and train on, and how that differs from the published runs."""
    recipe = task.decoder_recipe(layout)
    entry = task.protocol_task(layout)
    protocol_size = None if entry is None else entry.segmentation.get("input_size")
    if recipe.image_size is None:
        frame = "the backbone's own input frame (its classification steps), not the whole image as the published runs"
    else:
        size = f"{recipe.image_size} px"
        if protocol_size is not None and protocol_size != recipe.image_size:
            size += f" (this study's size; the published runs read {protocol_size} px)"
        frame = f"the whole image resized to {size} and normalised to [-1, 1], as the published runs read it"
    if recipe.views:
        training = (f"trained on {recipe.views} seeded ShiftScaleRotate views of each image, extracted once, view "
                    "((epoch - 1) mod K) + 1 at each epoch: where the published training drew a fresh warp for "
                    f"every image at every epoch, each image here sees at most {recipe.views} distinct warps (about "
                    "half of the draws are the identity, as the published p = 0.5), the same ones in every run and "
                    "seed")
    else:
        training = "trained on the unwarped images (the published training drew a ShiftScaleRotate every epoch)"
    return (f"- Decoders read {frame}; {training}. Patch tokens go to the {recipe.decoder.value} decoder; "
            f"{recipe.loss.value} loss, batches of {recipe.batch_size}, at most {recipe.max_epochs} epochs, "
            f"validated every {recipe.validation_interval}.")


def _details(report: StudyReport, task: TaskSpec) -> list[Mapping[str, object]]:
    """The result details of the task's computed heads."""
    stored = [step.result() for step in report.plan.head_steps() if step.task.name == task.name]
    return [result.record.details for result in stored if result is not None]


def _render_methods(report: StudyReport) -> str:
    """The other published methods beside this study's best Adaptor cell per column."""
    published = report.plan.spec.published
    tasks = [task for task in report.plan.spec.tasks if task.compared_with_published
             and any(task.spec_name in method.values for method in published.methods)]
    header = ["method"] + [f"{task.spec_name} {fraction:g}%" for task in tasks for fraction in task.fractions]
    header.append("trainable parameters")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in published.methods:
        values = [f"{method.values[task.spec_name][index]:.1f}" if task.spec_name in method.values else ""
                  for task in tasks for index in range(len(task.fractions))]
        parameters = "" if method.trainable_parameters is None else f"{method.trainable_parameters:,}"
        lines.append("| " + " | ".join([f"{method.name} (published)", *values, parameters]) + " |")
    best = [_best_adaptor_cell(report, task, fraction) for task in tasks for fraction in task.fractions]
    lines.append("| " + " | ".join(["this study: best Adaptor pair per column", *best, ""]) + " |")
    return ("## Other published methods, for context\n\nEnd-to-end pre-trained methods as the published source "
            "tabulates them (percent).\n\n" + "\n".join(lines) + "\n")


def _best_adaptor_cell(report: StudyReport, task: TaskSpec, fraction: float) -> str:
    table = next(table for table in report.tables if table.task is task and table.compared)
    computed = [(cell.value, f"{image}+{row}") for (row, image, cell_fraction), cell in table.cells.items()
                if cell_fraction == fraction and row != BASELINE_ROW and cell.status is CellStatus.COMPUTED]
    if not computed:
        return "not computed"
    value, pair = max(computed)
    return f"{value:.1f} ({pair})"


def _costs(plan: StudyPlan, states: Mapping[str, StepState]) -> tuple[StepCost, ...]:
    entries: dict[str, list[LogEntry]] = {}
    for entry in RunLog(plan.spec.out).entries():
        entries.setdefault(entry.step, []).append(entry)
    costs = []
    for step in plan.steps:
        logged = entries.get(step.key, [])
        done = [entry for entry in logged if entry.outcome is Outcome.DONE]
        failed = [entry for entry in logged if entry.outcome is Outcome.FAILED]
        last = done[-1] if done else None
        costs.append(StepCost(step.key, step.kind, states[step.key].status, None if last is None else last.seconds,
                              None if last is None else last.started, len(failed),
                              sum(entry.seconds for entry in failed)))
    return tuple(costs)


def _costs_by_kind(report: StudyReport) -> dict[str, dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in StepKind:
        costs = [cost for cost in report.costs if cost.kind is kind]
        timed = [cost for cost in costs if cost.seconds is not None]
        by_kind[kind.value] = {"steps": len(costs), "done": sum(cost.status is Status.DONE for cost in costs),
                               "timed": len(timed), "seconds": sum(cost.seconds for cost in timed),
                               "failed_attempts": sum(cost.failed_attempts for cost in costs),
                               "failed_seconds": sum(cost.failed_seconds for cost in costs)}
    return by_kind


def _render_costs(report: StudyReport, with_steps: bool) -> str:
    lines = ["## Cost\n",
             "Wall time of each step's last successful run, from the study runner's log "
             f"(`{RunLog(report.plan.spec.out).path}`). A step done outside `adaptor study run` (by hand, with "
             "the stage commands) has no time recorded.\n",
             "| step kind | steps | done | timed | wall time | failed attempts (time) |", "|---|---|---|---|---|---|"]
    for kind, numbers in _costs_by_kind(report).items():
        lines.append(f"| {kind} | {numbers['steps']} | {numbers['done']} | {numbers['timed']} | "
                     f"{_duration(numbers['seconds'])} | {numbers['failed_attempts']} "
                     f"({_duration(numbers['failed_seconds'])}) |")
    lines.append(f"| **total** | {len(report.costs)} | {sum(c.status is Status.DONE for c in report.costs)} | "
                 f"{sum(c.seconds is not None for c in report.costs)} | **{_duration(report.total_seconds)}** "
                 "(failed attempts included) | |")
    text = "\n".join(lines) + "\n"
    if with_steps:
        rows = ["| step | status | wall time | started |", "|---|---|---|---|"]
        rows += [f"| {cost.key} | {cost.status.value} | "
                 f"{'not recorded' if cost.seconds is None else _duration(cost.seconds)} | {cost.started or ''} |"
                 for cost in report.costs]
        text += "\nEvery step:\n\n" + "\n".join(rows) + "\n"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
