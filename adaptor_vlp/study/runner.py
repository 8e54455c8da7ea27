"""Running a study's pending steps in dependency order, in this process or on a Dask cluster.

The runner works in waves: it reads every step's state from the records on disk, runs the steps
that are pending and whose dependencies are done, and reads the states again. So a rerun after a
kill at any point redoes only what has no record yet (each stage resumes its own half-done work:
extraction by shard, training from its last checkpoint), and a second run finds nothing to do.

A step that fails is logged with its reason; steps that do not depend on it go on, steps that do
are reported as not run. With `--scheduler local:N` or a Dask address, manifests and extractions
run in this process one at a time, their shards spread over the cluster as `adaptor extract`
spreads them, while the independent training runs and heads of a wave run as Dask tasks side by
side (Dask workers may not start the DataLoader processes a whole extraction run uses). The image
extractions of a wave that share a dataset and settings run as one pass, decoding each image once
for all their backbones; each keeps its own step, store and log entry. Likewise the train steps
of a wave on one image store with the same recipe train as stacks of up to `STUDY_STACK_SIZE`
(one per image backbone and recipe in the paper's study: its text encoders), each run with its
own folder, resume and log entry; with a cluster, each stack is one Dask task.
"""
from __future__ import annotations

import functools
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence

import torch

from adaptor_vlp.cache_schema.cluster import Scheduler, local_cluster, parse_scheduler, run_on_dask
from adaptor_vlp.study.log import LogEntry, Outcome, RunLog
from adaptor_vlp.study.plan import StudyPlan
from adaptor_vlp.study.steps import (
    ExtractStep,
    Status,
    Step,
    StepFailed,
    StepKind,
    TrainStep,
    extract_in_one_pass,
    train_in_one_stack,
)
from adaptor_vlp.train.sweep import CUDA_STACK_SIZE

IN_PROCESS_KINDS = (StepKind.MANIFEST, StepKind.EXTRACT)
"""Steps that always run in the runner's process (extraction places its own shards on the cluster)."""
STUDY_STACK_SIZE = CUDA_STACK_SIZE
"""Train steps in one stack at most. On CUDA a stack shares the launch-bound step's kernel launches; on the CPU it
runs at parity with one run at a time (BENCHMARKS.md, "Stacked sweeps") and loads the image store once."""


@dataclass(frozen=True)
class StepOutcome:
    """How one step run ended: its account or its failure's reason, when it started and how long it took."""

    key: str
    kind: StepKind
    succeeded: bool
    started: str
    seconds: float
    detail: str


@dataclass
class RunSummary:
    """What one `study run` did: the steps it ran, how many were done already, and what could not run and why."""

    run_id: str
    total: int
    done_before: int
    outcomes: list[StepOutcome] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[StepOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.succeeded]

    @property
    def complete(self) -> bool:
        """True when every step of the study is done."""
        return not (self.failed or self.blocked or self.not_run)

    def lines(self) -> list[str]:
        """The closing account: counts, then every step that failed, cannot run or was not run, with why."""
        if not self.outcomes and not self.blocked:
            return [f"nothing to do: all {self.total} steps are done"]
        seconds = sum(outcome.seconds for outcome in self.outcomes)
        lines = [f"ran {len(self.outcomes)} steps in {seconds:.1f} s ({len(self.failed)} failed); "
                 f"{self.done_before} were done before this run; {len(self.blocked)} cannot run; "
                 f"{len(self.not_run)} not run because a step they need failed"]
        lines += [f"failed      {outcome.key}: {outcome.detail}" for outcome in self.failed]
        lines += [f"cannot run  {key}: {reason}" for key, reason in self.blocked.items()]
        lines += [f"not run     {key}: {reason}" for key, reason in self.not_run.items()]
        return lines


def execute_step(step: Step, scheduler: str, torch_threads: int | None = None) -> StepOutcome:
    """Runs one step and says how it went; an error becomes a failed outcome with its reason, never a raise.

    `torch_threads` sets this process's torch intra-op threads first (a Dask worker's, for a task).
    """
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    try:
        detail, succeeded = step.execute(scheduler), True
    except Exception as error:  # a failing step is reported and the study goes on (see the module docstring)
        detail, succeeded = _reason(error), False
    return StepOutcome(step.key, step.kind, succeeded, started, time.perf_counter() - clock, detail)


def execute_together(steps: Sequence[Step], scheduler: str, torch_threads: int | None = None) -> list[StepOutcome]:
    """Runs one group of `step_groups` (one pass of extractions, one stack of training runs): an outcome per step.

    A group of one runs as `execute_step`. Each step's time is the group's time shared evenly
    among them, so a study's cost adds up to the time it took. If the group fails, each step runs
    again alone (resuming what the group wrote), so one backbone's failure (weights that do not
    load, say) fails its own step and not the others. Never raises.
    """
    if len(steps) == 1:
        return [execute_step(steps[0], scheduler, torch_threads)]
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    try:
        products = (train_in_one_stack(steps) if steps[0].kind is StepKind.TRAIN
                    else extract_in_one_pass(steps, scheduler))
    except Exception:  # each step alone says whose failure it was (see the docstring)
        return [execute_step(step, scheduler, torch_threads) for step in steps]
    seconds = (time.perf_counter() - clock) / len(steps)
    outcomes = []
    for step, product in zip(steps, products):
        try:
            detail, succeeded = step.account(product), True
        except StepFailed as error:
            detail, succeeded = _reason(error), False
        outcomes.append(StepOutcome(step.key, step.kind, succeeded, started, seconds, detail))
    return outcomes


def step_groups(steps: Sequence[Step]) -> list[list[Step]]:
    """The steps in order, with those that run together gathered where the first of them stands.

    Extraction steps of equal `pass_settings` make one pass; train steps of equal `stack_settings`
    make stacks of up to STUDY_STACK_SIZE; every other step is a group of its own.
    """
    groups: dict[object, list[Step]] = {}
    for position, step in enumerate(steps):
        settings = _shared_settings(step)
        groups.setdefault(position if settings is None else (step.kind, settings), []).append(step)
    chunks = []
    for group in groups.values():
        size = STUDY_STACK_SIZE if group[0].kind is StepKind.TRAIN else len(group)
        chunks += [group[start:start + size] for start in range(0, len(group), size)]
    return chunks


def _shared_settings(step: Step) -> object | None:
    """What a step shares with the steps it runs together with; None: it runs alone."""
    if isinstance(step, ExtractStep):
        return step.pass_settings()
    if isinstance(step, TrainStep):
        return step.stack_settings()
    return None


def run_study(plan: StudyPlan, scheduler: str = "none", on_event: Callable[[str], None] = print) -> RunSummary:
    """Runs every pending step whose dependencies are done, wave after wave, until none is left to run."""
    placement = parse_scheduler(scheduler)
    log = RunLog(plan.spec.out)
    states = plan.states()
    summary = RunSummary(uuid.uuid4().hex[:12], len(plan.steps),
                         sum(state.status is Status.DONE for state in states.values()))
    summary.blocked = {key: state.detail for key, state in states.items() if state.status is Status.BLOCKED}
    on_event(f"study {plan.spec.name}: {summary.total} steps, {summary.done_before} done, "
             f"{len(summary.blocked)} cannot run, {summary.total - summary.done_before - len(summary.blocked)} to run")
    ran: set[str] = set()
    with _cluster(placement) as address, _torch_threads_restored():
        while ready := _ready(plan, states, ran):
            for outcome in _run_wave(ready, address, plan.spec.torch_threads, on_event):
                ran.add(outcome.key)
                log.append(LogEntry(summary.run_id, outcome.key, outcome.kind.value,
                                    Outcome.DONE if outcome.succeeded else Outcome.FAILED, outcome.started,
                                    outcome.seconds, outcome.detail))
                summary.outcomes.append(outcome)
            states = plan.states()
            _fail_unrecorded(summary, states)
    summary.blocked = {key: state.detail for key, state in states.items() if state.status is Status.BLOCKED}
    summary.not_run = _not_run(plan, states, ran)
    return summary


def _ready(plan: StudyPlan, states: dict, ran: set[str]) -> list[Step]:
    """Pending steps not yet tried by this run whose dependencies are all done."""
    return [step for step in plan.steps if step.key not in ran and states[step.key].status is Status.PENDING
            and all(states[key].status is Status.DONE for key in step.depends_on)]


def _run_wave(ready: Sequence[Step], address: str | None, torch_threads: int | None,
              on_event: Callable[[str], None]) -> Iterator[StepOutcome]:
    """Runs one wave: in-process steps first, one at a time, then the rest (as Dask tasks when there is a cluster)."""
    local = [step for step in ready if address is None or step.kind in IN_PROCESS_KINDS]
    remote = [step for step in ready if step not in local]
    for group in step_groups(local):
        on_event(f"-> {_group_line(group)}")
        for outcome in execute_together(group, address or "none", torch_threads):
            on_event(_outcome_line(outcome))
            yield outcome
    if not remote:
        return
    on_event(f"-> {len(remote)} steps as Dask tasks on {address}: {', '.join(step.key for step in remote[:3])}"
             f"{' ...' if len(remote) > 3 else ''}")
    finished: set[str] = set()
    task = functools.partial(execute_together, scheduler="none", torch_threads=torch_threads)
    try:
        for group, outcomes in run_on_dask(Scheduler(address=address), task, step_groups(remote)):
            if len(group) > 1:
                on_event(f"   {_group_line(group)}")
            for outcome in outcomes:
                finished.add(outcome.key)
                on_event(_outcome_line(outcome))
                yield outcome
    except Exception as error:  # the cluster itself failed (a worker died): the unfinished steps failed with it
        reason = f"its Dask task did not finish: {_reason(error)}"
        for step in remote:
            if step.key not in finished:
                outcome = StepOutcome(step.key, step.kind, False, "", 0.0, reason)
                on_event(_outcome_line(outcome))
                yield outcome


def _fail_unrecorded(summary: RunSummary, states: dict) -> None:
    """A step that ran without error but whose records still do not show it done has failed (and is not rerun)."""
    for index, outcome in enumerate(summary.outcomes):
        if outcome.succeeded and states[outcome.key].status is not Status.DONE:
            summary.outcomes[index] = StepOutcome(outcome.key, outcome.kind, False, outcome.started, outcome.seconds,
                                                  f"ran, but its records do not show it done: "
                                                  f"{states[outcome.key].detail}")


def _not_run(plan: StudyPlan, states: dict, ran: set[str]) -> dict[str, str]:
    """Pending steps this run could not reach, each with the first step it waits on that is not done."""
    not_run = {}
    for step in plan.steps:
        if states[step.key].status is Status.PENDING and step.key not in ran:
            waiting = next((key for key in step.depends_on if states[key].status is not Status.DONE), "")
            not_run[step.key] = f"waits on {waiting}"
    return not_run


@contextmanager
def _torch_threads_restored() -> Iterator[None]:
    """Puts this process's torch thread count back after a run whose steps set their own (`study.torch_threads`)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _cluster(placement: Scheduler) -> Iterator[str | None]:
    """The Dask scheduler address the study's steps use (one local cluster for the whole run), or None in-process."""
    if placement.in_process:
        yield None
    elif placement.address is not None:
        yield placement.address
    else:
        cluster = local_cluster(placement.local_workers)
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()


def _group_line(group: Sequence[Step]) -> str:
    """What a group of `step_groups` is, for the run's events."""
    if len(group) == 1:
        return group[0].key
    how = "in one stack" if group[0].kind is StepKind.TRAIN else "in one pass"
    return f"{len(group)} steps {how}: {', '.join(step.key for step in group)}"


def _outcome_line(outcome: StepOutcome) -> str:
    verdict = "done" if outcome.succeeded else "FAILED"
    return f"   {verdict} in {outcome.seconds:.1f} s: {outcome.key}: {outcome.detail}"


def _reason(error: BaseException) -> str:
    """An error as one line: the message alone for the project's own input errors, else its type too."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return message if type(error).__module__.startswith("adaptor_vlp") and message else \
        f"{type(error).__name__}: {message or 'no message'}"
