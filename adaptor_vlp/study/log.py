"""The study runner's own log: one JSON line per step it ran, with how long the step took and how it ended.

It exists for the report's cost table and for the reason a step failed. It is not a record of
what is done (the stages' own records decide that, so a step done by hand counts), and no other
part of the project reads it. Each line is appended in one write, so a run killed at any point
leaves whole lines behind (a torn last line is skipped on reading).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

LOG_FILE = "study-log.jsonl"


class Outcome(str, Enum):
    """How a step the runner ran ended."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class LogEntry:
    """One step run: which invocation ran it, which step, how it ended, when it started, how long it took, and
    its one-line account (the failure's reason when it failed)."""

    run_id: str
    step: str
    kind: str
    outcome: Outcome
    started: str
    seconds: float
    detail: str


class RunLog:
    """The log file of one study's output folder."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOG_FILE

    def append(self, entry: LogEntry) -> None:
        """Adds one line in a single write (O_APPEND), so concurrent or killed runs never interleave half lines."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**asdict(entry), "outcome": entry.outcome.value}) + "\n"
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(descriptor, line.encode("utf-8"))
        finally:
            os.close(descriptor)

    def entries(self) -> list[LogEntry]:
        """Every whole line, oldest first; an unreadable line (a run killed mid-write) is skipped."""
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                values = json.loads(line)
                entries.append(LogEntry(**{**values, "outcome": Outcome(values["outcome"])}))
            except (ValueError, TypeError, KeyError):
                continue
        return entries

    def latest(self) -> dict[str, LogEntry]:
        """The last entry of each step."""
        return {entry.step: entry for entry in self.entries()}
