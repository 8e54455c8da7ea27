"""`adaptor study plan|run|report SPEC`: a whole study (extract, train, evaluate) as one command."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from adaptor_vlp.cache_schema.cli import input_errors_exit
from adaptor_vlp.cache_schema.cluster import SCHEDULER_HELP, SchedulerError
from adaptor_vlp.study.plan import StudyPlan, plan_study
from adaptor_vlp.study.plots import draw_study_plots
from adaptor_vlp.study.report import build_report, render_markdown, write_report
from adaptor_vlp.study.runner import run_study
from adaptor_vlp.study.spec import SpecError, load_spec
from adaptor_vlp.study.steps import Status, StepKind

INPUT_ERRORS = (SpecError, SchedulerError)
"""Errors caused by the command's input: one clear line and exit code 2."""

SPEC_ARGUMENT = typer.Argument(..., help="Study spec (TOML), e.g. studies/demo.toml; its schema is in the README.")
CACHE_OPTION = typer.Option(None, "--cache", help="Cache folder, instead of the spec's study.cache.")
OUT_OPTION = typer.Option(None, "--out", help="Output folder (runs, results, log, report), instead of the spec's "
                                              "study.out.")

app = typer.Typer(no_args_is_help=True, help="Plan, run and report a whole study described by a spec file.")


@app.command()
def plan(
    spec: Path = SPEC_ARGUMENT,
    cache: Optional[Path] = CACHE_OPTION,
    out: Optional[Path] = OUT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print every step with its state and needs as JSON."),
) -> None:
    """List every step of the study, which are done (by the stores' and runs' own records) and what the rest need."""
    with input_errors_exit(*INPUT_ERRORS):
        study = _plan(spec, cache, out)
    states = study.states()
    if as_json:
        typer.echo(json.dumps([{"step": step.key, "kind": step.kind.value, "status": states[step.key].status.value,
                                "detail": states[step.key].detail, "depends_on": list(step.depends_on),
                                "needs": step.needs()} for step in study.steps], indent=1))
        return
    for line in _plan_lines(study, states):
        typer.echo(line)


@app.command()
def run(
    spec: Path = SPEC_ARGUMENT,
    cache: Optional[Path] = CACHE_OPTION,
    out: Optional[Path] = OUT_OPTION,
    scheduler: str = typer.Option("none", "--scheduler", help=f"Where independent steps run. {SCHEDULER_HELP}"),
) -> None:
    """Run every pending step in dependency order (resumable, idempotent); exit 1 when some step is left undone."""
    with input_errors_exit(*INPUT_ERRORS):
        study = _plan(spec, cache, out)
        summary = run_study(study, scheduler, on_event=typer.echo)
    for line in summary.lines():
        typer.echo(line)
    if not summary.complete:
        raise typer.Exit(1)
    typer.echo(f"next: adaptor study report {spec}")


@app.command()
def report(
    spec: Path = SPEC_ARGUMENT,
    cache: Optional[Path] = CACHE_OPTION,
    out: Optional[Path] = OUT_OPTION,
) -> None:
    """Write OUT/report.md, OUT/report.json and OUT/plots/, and print the tables beside the published values."""
    with input_errors_exit(*INPUT_ERRORS):
        study = _plan(spec, cache, out)
    built = build_report(study)
    plots = draw_study_plots(built)
    markdown, document = write_report(built, plots)
    typer.echo(render_markdown(built, plots, with_step_costs=False))
    typer.echo(f"report: {markdown} and {document} ({len(plots)} plots)")


def _plan(spec: Path, cache: Path | None, out: Path | None) -> StudyPlan:
    return plan_study(load_spec(spec).with_paths(cache, out))


def _plan_lines(study: StudyPlan, states: dict) -> list[str]:
    """Counts per kind and status, then every step: its state, what it needs, and what it waits on."""
    counts = Counter(state.status for state in states.values())
    spec = study.spec
    lines = [f"study {spec.name} ({spec.path}): {len(study.steps)} steps: {counts[Status.DONE]} done, "
             f"{counts[Status.PENDING]} pending, {counts[Status.BLOCKED]} cannot run; "
             f"{len(study.left_out)} task x image backbone cells left out by the spec",
             f"cache {spec.cache}, output {spec.out}"]
    for kind in StepKind:
        kind_counts = Counter(states[step.key].status for step in study.steps if step.kind is kind)
        lines.append(f"  {kind.value:<9} " + ", ".join(f"{kind_counts[status]} {status.value}" for status in Status))
    lines.append("")
    for step in study.steps:
        state = states[step.key]
        lines.append(f"{state.status.value:<11} {step.key}: {state.detail}")
        if state.status is Status.DONE:
            continue
        waiting = [key for key in step.depends_on if states[key].status is not Status.DONE]
        if waiting:
            lines.append(f"{'':<13}after: {', '.join(waiting)}")
        if step.kind in (StepKind.MANIFEST, StepKind.EXTRACT):
            lines += [f"{'':<13}needs {need}" for need in step.needs()]
    lines += [f"left out    {cell.task} x {cell.image}: {cell.reason}" for cell in study.left_out]
    return lines
