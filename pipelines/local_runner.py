"""Run the pipeline on this machine through kfp.local, and read back what the run produced."""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.configs import require
from pipelines.arguments import validate_arguments
from pipelines.pipeline import compile_pipeline


@dataclass(frozen=True)
class LocalRun:
    run_dir: Path  # everything the run wrote: artifacts per task, pipeline.yaml, report.html, summary.json
    pipeline_yaml: Path  # the compiled DAG that ran
    report_html: Path
    report_markdown: Path
    comparison: dict[str, Any]  # the report's numbers (release.report.comparison_json): the final table
    log: Path  # everything kfp.local and the tasks printed
    tensorboard: Path  # one link per run to its TensorBoard logs: tensorboard --logdir THIS
    candidate_run: str  # the selected run's name (release.comparison: the candidate)
    blessed: bool
    blessing: dict[str, Any]  # blessing.json
    pushed_model: str | None  # the candidate's version directory in the registry, if it was blessed and pushed
    production_model: str | None  # the registry's champion after the run (the pushed one, or the one that stayed)
    plots: Path | None = None  # the report's figures as PNG files


def new_run_dir(output: str | Path, profile: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(output).resolve() / f"{stamp}-{profile}"
    require(not path.exists(), "--output", f"{path} already exists")
    return path


def run_local(arguments: dict[str, Any], run_dir: Path, parallelism: int, verbose: bool = False) -> LocalRun:
    """Compile the DAG into ``run_dir/pipeline.yaml`` and execute that file with kfp.local's SubprocessRunner.

    Tasks run as subprocesses of this interpreter (the project is installed in it, so their imports work);
    ``parallelism`` variants train at once, each with ``cores // parallelism`` torch threads. The terminal shows
    one line per task as it starts and ends and a progress line while variants train; kfp.local's own output
    (executor inputs and outputs, every task's log) goes to ``run_dir/kfp-local.log``, and with ``verbose`` to the
    terminal as well.
    """
    from kfp import components, local

    require(parallelism >= 1, "parallelism", f"must be >= 1 for a local run, got {parallelism}")
    arguments = dict(arguments)
    concurrent = min(parallelism, len(arguments["variants"]))
    if not arguments.get("torch_threads"):  # 0 means every core of the pod: here the cores are shared
        arguments["torch_threads"] = max(1, (os.cpu_count() or 1) // concurrent)
    arguments = validate_arguments(arguments)
    run_dir.mkdir(parents=True)
    package = compile_pipeline(run_dir / "pipeline.yaml", parallelism=parallelism)
    (run_dir / "arguments.json").write_text(json.dumps(arguments, indent=2) + "\n")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir),
               workspace_root=str(run_dir / ".workspace"), raise_on_error=True)
    print_before = builtins.print
    log = run_dir / LOG_NAME
    try:
        with warnings.catch_warnings(), task_lines(log, verbose):
            # kfp.local runs every task in this environment: the image name and the cluster-only task settings
            # (display names, resources) do not apply here, and it says so once per task.
            warnings.filterwarnings("ignore", message=r".*(base image|have no effect in the current local runner).*")
            task = components.load_component_from_file(str(package))(**arguments)
    finally:
        # kfp.local swaps builtins.print for an indenting one around each task, not thread-safely: two loop
        # iterations finishing together can leave it swapped for good.
        builtins.print = print_before
    return collect_local_run(run_dir, package, task.outputs, arguments, log)


LOG_NAME = "kfp-local.log"
PROGRESS_EVERY_SECONDS = 30.0  # without a terminal: one progress line per variant at most this often


class TaskLines(io.TextIOBase):
    """``sys.stdout`` while kfp.local runs: every line goes to the log file; the lines tasks mark as events
    (components.events) become one terminal line per task start and end, and a progress line while variants train
    (one line rewritten in place on a terminal, else a line per variant every ``PROGRESS_EVERY_SECONDS``).
    Loop iterations print from several threads at once: a lock keeps lines whole."""

    def __init__(self, log: Path, terminal, verbose: bool):
        self.file = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.terminal, self.verbose = terminal, verbose
        self.tty = hasattr(terminal, "isatty") and terminal.isatty()
        self.lock = threading.Lock()
        self.pending = ""
        self.started = time.monotonic()
        self.progress: dict[str, str] = {}  # running train task's variant -> its latest progress message
        self.progress_shown: dict[str, float] = {}
        self.status_shown = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            *lines, self.pending = (self.pending + text).split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.file.flush()
            self.terminal.flush()

    def close(self) -> None:
        with self.lock:
            if self.pending:
                self._line(self.pending)
                self.pending = ""
            self._clear_status()
        super().close()  # flushes
        self.file.close()

    def _line(self, line: str) -> None:
        from components import events

        self.file.write(line + "\n")
        if self.verbose:
            self._say(line)
        event = events.parse(line)
        if event is not None:
            self._event(event)

    def _say(self, line: str) -> None:
        self._clear_status()
        self.terminal.write(line + "\n")
        self.terminal.flush()

    def _clear_status(self) -> None:
        if self.status_shown:
            self.terminal.write("\r\033[K")
            self.status_shown = False

    def _event(self, event: dict[str, Any]) -> None:
        variant, kind = event.get("variant") or "", event["event"]
        if kind == "progress":
            self.progress[variant] = str(event.get("message", ""))
            self._show_progress(variant)
            return
        if event["task"] == "train" and kind == "done":
            self.progress.pop(variant, None)
        self._say(format_event(event, time.monotonic() - self.started))
        if self.tty and self.progress:
            self._show_progress(None)

    def _show_progress(self, variant: str | None) -> None:
        if self.tty:
            columns = shutil.get_terminal_size((100, 24)).columns
            status = "  " + " | ".join(f"{name}: {message}" for name, message in self.progress.items())
            self._clear_status()
            self.terminal.write(status[:columns - 1])
            self.terminal.flush()
            self.status_shown = True
        elif variant is not None:
            now = time.monotonic()
            if now - self.progress_shown.get(variant, -PROGRESS_EVERY_SECONDS) >= PROGRESS_EVERY_SECONDS:
                self.progress_shown[variant] = now
                self._say(f"{_clock(now - self.started)}   {variant}: {self.progress[variant]}")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"[{minutes:02d}:{secs:02d}]"


def format_event(event: dict[str, Any], elapsed: float) -> str:
    """``[01:52] train             baseline           done   103.2 s  valid Recall@10 0.0912 after 300 steps``"""
    head = f"{_clock(elapsed)} {event['task']:17s} {event.get('variant') or '':24s}"
    if event["event"] == "start":
        return f"{head} started"
    seconds = event.get("seconds")
    took = f"{seconds:7.1f} s" if isinstance(seconds, int | float) else ""
    return f"{head} done {took}  {event.get('result', '')}".rstrip()


@contextlib.contextmanager
def task_lines(log: Path, verbose: bool) -> Iterator[TaskLines]:
    """Route ``sys.stdout`` and the root logger through ``TaskLines``; on a failure, the end of the log is shown with
    its path.

    kfp.local prints to ``sys.stdout`` and swaps the root logger's handlers for one on ``sys.stdout`` around each
    task, restoring the ones it found afterwards; concurrent loop iterations restore each other's, so records of
    a running task can land on whatever handlers the CLI had (the terminal). With only our handler installed for
    the run, every restore lands on it too."""
    import logging

    terminal = sys.stdout
    stream = TaskLines(log, terminal, verbose)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = logging.StreamHandler(stream)
    ours.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.handlers = [ours]
    sys.stdout = stream
    try:
        yield stream
    except BaseException:
        sys.stdout = terminal
        stream.close()
        if not verbose:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            print(f"--- the last {len(tail)} lines of {log} ---", *tail, "---", sep="\n", file=sys.stderr)
        raise
    finally:
        sys.stdout = terminal
        root.handlers, root.level = handlers, level
        if not stream.closed:
            stream.close()


def collect_local_run(run_dir: Path, package: Path, outputs: dict[str, Any], arguments: dict[str, Any],
                      log: Path | None = None) -> LocalRun:
    """Read what a finished local run produced and copy the report to the top of ``run_dir`` as real ``.html``
    and ``.md`` files (the KFP artifacts keep their own copies; their names have no extension, so a browser
    would show the page's source)."""
    from components.artifacts import identity
    from core import contract
    from release import registry

    blessing_artifact = outputs["blessing"]
    blessing = json.loads(Path(blessing_artifact.path).read_text())
    blessed = bool(blessing_artifact.metadata["blessed"])
    pointer, _ = registry.read_pointer(arguments["registry"], arguments["model_name"])
    # The push moved the pointer to this model's version (unless another run moved it since).
    ours = blessed and pointer and pointer["version"] == registry.default_version(outputs["candidate"].path)
    reports = {}
    for name, key in ((contract.REPORT_HTML, "report_html"), (contract.REPORT_MARKDOWN, "report_markdown"),
                      (contract.REPORT_COMPARISON, "comparison")):
        reports[key] = run_dir / name
        shutil.copyfile(outputs[key].path, reports[key])
    plots = run_dir / "plots"
    shutil.copytree(outputs["report_plots"].path, plots, dirs_exist_ok=True)

    def version_dir(pointer: dict) -> str:
        return registry.resolve_path(arguments["registry"], pointer.get("path") or f"{arguments['model_name']}/"
                                     f"{pointer['version']}")

    return LocalRun(
        run_dir=run_dir, pipeline_yaml=package, report_html=reports["report_html"],
        report_markdown=reports["report_markdown"], comparison=json.loads(reports["comparison"].read_text()),
        log=log or run_dir / LOG_NAME, tensorboard=link_tensorboard_logs(run_dir),
        candidate_run=identity(blessing_artifact.metadata)["name"], blessed=blessed, blessing=blessing,
        pushed_model=version_dir(pointer) if ours else None,
        production_model=version_dir(pointer) if pointer else None, plots=plots,
    )


def tensorboard_runs(run_dir: str | Path) -> dict[str, Path]:
    """Every variant's TensorBoard logs below a local run directory: ``<artifact>/tensorboard/<variant>/``."""
    from components.artifacts import RUNS

    runs: dict[str, Path] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):  # does not follow the links below
        parts = events.relative_to(run_dir).parts
        # <run_dir>/runs/<run id>/tensorboard/ holds copies of the same logs (the run's own place, which a cluster
        # run's TensorBoard reads: components.artifacts.run_root).
        if "tensorboard" not in parts[:-2] or parts[0] == RUNS:
            continue
        at = len(parts) - 1 - parts[::-1].index("tensorboard")
        name, variant_dir = parts[at + 1], Path(run_dir, *parts[:at + 2])
        require(runs.get(name, variant_dir) == variant_dir, "RUN_DIR",
                f"two TensorBoard logs for variant {name!r}: {runs.get(name)} and {variant_dir}")
        runs[name] = variant_dir
    return runs


def link_tensorboard_logs(run_dir: str | Path) -> Path:
    """``<run_dir>/tensorboard/<variant>`` links to every variant's logs, so ``tensorboard --logdir`` on that
    one directory shows one run per variant, named after it."""
    runs = tensorboard_runs(run_dir)
    require(bool(runs), "RUN_DIR", f"no TensorBoard logs below {run_dir}: is it an `interest run` output?")
    board = Path(run_dir, "tensorboard")
    board.mkdir(exist_ok=True)
    for name, path in runs.items():
        link = board / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(path, board), target_is_directory=True)
    return board


def tensorboard_command(run_dir: str | Path, port: int) -> list[str]:
    """TensorBoard over every variant's logs of a run, on 127.0.0.1 only."""
    import sys

    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(link_tensorboard_logs(run_dir)),
            "--host", "127.0.0.1", "--port", str(port)]


