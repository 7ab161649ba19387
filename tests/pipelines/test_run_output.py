"""What the terminal shows while `interest run` works: one line per task start and end, a progress line while
variants train; kfp.local's executor dumps go to the run's log file (and to the terminal with --verbose)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from components import events
from pipelines.local_runner import TaskLines, task_lines

DUMP = ['[KFP Executor 2026-12-01 23:44:25,133 INFO]: Got executor_input:', '{', '    "inputs": {', '}']


def marked(event: str, task: str, run: str | None = None, **fields) -> str:
    out = io.StringIO()
    sys.stdout, saved = out, sys.stdout
    try:
        events.emit(event, task, run, **fields)
    finally:
        sys.stdout = saved
    return "    " + out.getvalue()  # kfp.local indents a task's output


class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def feed(stream: TaskLines, lines: list[str]) -> None:
    for line in lines:  # as kfp.local prints: indent, then the text, sometimes in pieces
        half = len(line) // 2
        stream.write(line[:half])
        stream.write(line[half:] + ("" if line.endswith("\n") else "\n"))


def test_tasks_are_one_line_each_and_kfp_dumps_go_to_the_log(tmp_path):
    terminal, log = Terminal(tty=False), tmp_path / "kfp-local.log"
    stream = TaskLines(log, terminal, verbose=False)
    feed(stream, ["23:44:25.031 - INFO - Executing task 'train'", *DUMP, marked("start", "train", "baseline"),
                  marked("progress", "train", "baseline", message="step 10/300 loss 7.1 eta 0:01:40"),
                  marked("progress", "train", "baseline", message="step 20/300 loss 7.0 eta 0:01:30"),
                  marked("progress", "train", "rope", message="step 10/300 loss 7.2 eta 0:01:50"),
                  marked("done", "train", "baseline", seconds=98.4, result="valid Recall@10 0.0912 after 300 steps")])
    stream.close()
    shown = terminal.getvalue().splitlines()
    assert len(shown) == 4 and not any("executor_input" in line or "Executing" in line for line in shown)
    assert shown[0].split()[1:] == ["train", "baseline", "started"]
    assert shown[1].endswith("baseline: step 10/300 loss 7.1 eta 0:01:40")  # the second one within 30 s is held
    assert shown[2].endswith("rope: step 10/300 loss 7.2 eta 0:01:50")
    assert shown[3].split()[1:5] == ["train", "baseline", "done", "98.4"]
    assert shown[3].endswith("s  valid Recall@10 0.0912 after 300 steps")
    logged = log.read_text()
    assert all(line in logged for line in DUMP) and logged.count(events.MARK) == 5


def test_verbose_shows_everything(tmp_path):
    terminal = Terminal(tty=False)
    stream = TaskLines(tmp_path / "log", terminal, verbose=True)
    feed(stream, [*DUMP, marked("start", "train", "a")])
    stream.close()
    assert all(line in terminal.getvalue() for line in DUMP) and "a                        started" in terminal.getvalue()


def test_a_terminal_gets_one_progress_line_rewritten_in_place(tmp_path):
    terminal = Terminal(tty=True)
    stream = TaskLines(tmp_path / "log", terminal, verbose=False)
    feed(stream, [marked("progress", "train", "a", message="step 1/9"), marked("progress", "train", "b",
                                                                               message="step 2/9"),
                  marked("done", "train", "a", seconds=1.0)])
    stream.close()
    text = terminal.getvalue()
    assert "\r\033[K  a: step 1/9 | b: step 2/9" in text  # both variants on the one status line
    done = text.index("done")
    assert text[:done].rsplit("\r\033[K", 1)[-1].startswith("[00:00] train")  # cleared before a task line
    assert text[done:].split("\n", 1)[1].startswith("  b: step 2/9")  # then redrawn without the finished one
    assert text.endswith("\r\033[K")  # and cleared at the end


def test_task_lines_restores_stdout_and_logging_and_shows_the_logs_end_on_failure(tmp_path, capsys):
    root = logging.getLogger()
    before = root.handlers[:]
    with pytest.raises(RuntimeError, match="Task 'train' finished with status FAILURE"):
        with task_lines(tmp_path / "kfp-local.log", verbose=False):
            print("Traceback (most recent call last): ... CUDA out of memory")
            logging.getLogger("kfp").warning("only in the log")
            raise RuntimeError("Task 'train' finished with status FAILURE")
    assert not isinstance(sys.stdout, TaskLines)
    assert root.handlers == before
    err = capsys.readouterr().err
    assert f"the last 2 lines of {tmp_path / 'kfp-local.log'}" in err and "CUDA out of memory" in err


def test_events_survive_indentation_and_ignore_everything_else():
    line = marked("done", "evaluate", "rope", seconds=1.5, result="test Recall@10 0.1")
    assert events.parse(line) == {"event": "done", "task": "evaluate", "run": "rope", "seconds": 1.5,
                                  "result": "test Recall@10 0.1"}
    assert events.parse("    [KFP Executor ...]: step 3") is None
    assert events.parse(events.MARK + "{not json") is None
