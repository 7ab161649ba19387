"""`interest tensorboard RUN_DIR`: finds every variant's logs in a run directory and serves them on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.local_runner import link_tensorboard_logs, tensorboard_command, tensorboard_runs


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_run(run_dir: Path) -> dict[str, Path]:
    """A run directory laid out as kfp.local leaves it, with real SummaryWriter logs for two variants."""
    from torch.utils.tensorboard import SummaryWriter

    logs = {}
    for i, variant in enumerate(("baseline", "swiglu")):
        task = run_dir / "interest-pipeline-2026-01-01-00-00-00" / f"for-loop-1-iteration-{i}" / "train"
        (task / "model").mkdir(parents=True)
        (task / "model" / "model.pt").write_bytes(b"weights, not logs")
        logs[variant] = task / "tensorboard" / variant
        with SummaryWriter(str(logs[variant])) as writer:
            for step in range(3):
                writer.add_scalar("valid/recall@10", 0.1 * (i + 1) * step, step)
    return logs


def test_finds_one_log_directory_per_variant_and_links_them_by_name(tmp_path):
    logs = write_run(tmp_path)
    assert tensorboard_runs(tmp_path) == logs
    board = link_tensorboard_logs(tmp_path)
    assert board == tmp_path / "tensorboard"
    assert {p.name: p.resolve() for p in board.iterdir()} == {k: v.resolve() for k, v in logs.items()}
    assert link_tensorboard_logs(tmp_path) == board and tensorboard_runs(tmp_path) == logs  # idempotent
    cmd = tensorboard_command(tmp_path, 6123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6123"
    assert cmd[cmd.index("--logdir") + 1] == str(board)


def test_serves_every_variant_on_localhost(tmp_path):
    write_run(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "tensorboard", str(tmp_path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, runs = time.monotonic() + 60, []
        while time.monotonic() < deadline and sorted(runs) != ["baseline", "swiglu"]:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as response:
                    runs = json.loads(response.read())
            except OSError:
                assert proc.poll() is None, "tensorboard exited"
        assert sorted(runs) == ["baseline", "swiglu"]
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=swiglu&tag=valid/recall@10"
        with urllib.request.urlopen(url.replace("@", "%40"), timeout=5) as response:
            points = json.loads(response.read())
        assert [p[1] for p in points] == [0, 1, 2] and abs(points[-1][2] - 0.4) < 1e-6
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with pytest.raises(OSError):  # stopping the command stopped TensorBoard itself: nothing left listening
        urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)


def test_a_directory_without_logs_is_a_usage_error(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path)]) == 2
    assert "no TensorBoard logs" in capsys.readouterr().err
