"""One line per task as it starts and ends, and progress lines while it trains: what ``interest run`` shows instead of
kfp.local's executor dumps.

A task prints its events as single marked JSON lines on stdout (``@@interest-event {...}``); kfp.local streams a
task's output into the runner's stdout, where ``pipelines.local_runner`` keeps these lines for the terminal and
sends everything else to the run's log file. On a cluster the lines are plain log lines of the pod.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

MARK = "@@interest-event "


def parse(line: str) -> dict[str, Any] | None:
    """The event a line carries (anywhere in it: kfp.local indents task output), or None."""
    at = line.find(MARK)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(MARK):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event and "task" in event else None


def emit(event: str, task: str, run: str | None = None, **fields: Any) -> None:
    """``run``: the run (one trained model) the task works on, None for run-wide tasks."""
    print(MARK + json.dumps({"event": event, "task": task, "run": run, **fields}), flush=True)


class _Forward(logging.Handler):
    """Sends a logger's INFO records (the trainer's step and validation lines) as progress events."""

    def __init__(self, task: Task):
        super().__init__(logging.INFO)
        self.task = task

    def emit(self, record: logging.LogRecord) -> None:
        try:
            emit("progress", self.task.name, self.task.run, message=record.getMessage())
        except Exception:  # noqa: BLE001 - progress is a courtesy; never fail training over it
            self.handleError(record)


class Task:
    """``task = Task("train", run, progress_from="trainer")`` ... ``task.done("valid Recall@10 0.091")``."""

    def __init__(self, name: str, run: str | None = None, progress_from: str | None = None):
        self.name, self.run, self.started = name, run, time.monotonic()
        self.logger = logging.getLogger(progress_from) if progress_from else None
        self.handler = _Forward(self)
        if self.logger:
            self.logger.addHandler(self.handler)
        emit("start", name, run)

    def done(self, result: str = "", **fields: Any) -> None:
        """The end line: ``result`` is the task's key figure in words."""
        if self.logger:
            self.logger.removeHandler(self.handler)
        emit("done", self.name, self.run, seconds=round(time.monotonic() - self.started, 1), result=result,
             **fields)
