"""benchmarks/scale.py at a tiny size: every stage runs as its `interest` command, and the JSON, the growth table
and the plot say what each cost."""

import json
import os
import signal
import subprocess
import sys
import time

from benchmarks import scale

TINY_MODEL = ("--preset baseline --set d_model=16 --set n_layer=1 --set n_head=2 --set max_len=12 "
              "--set batch_size=8 --set eval_batch_size=64")


def test_two_tiny_sizes_through_every_stage(tmp_path):
    out = scale.main(["--sizes", "3000,6000", "--train-steps", "2", "--train-args", TINY_MODEL,
                      "--work", str(tmp_path / "work"), "--output", str(tmp_path / "scale.json"),
                      "--sample-seconds", "0.05"])
    assert json.loads((tmp_path / "scale.json").read_text())["sizes"] == out["sizes"]
    assert [row["events"] for row in out["sizes"]] == [3000, 6000]
    for row in out["sizes"]:
        assert row["users"] > 0 and row["interactions"] <= row["events"]
        for stage in scale.STAGES:
            result = row["stages"][stage]
            assert result["returncode"] == 0, result.get("error")
            assert result["seconds"] > 0 and result["throughput"] > 0
            # A Python process with Beam or torch imported holds well over 50 MB: the tree was measured.
            assert result["peak_rss_bytes"] > 50e6
        train = row["stages"]["train"]
        assert train["steps"] == 2 and train["validation_users"] > 0  # validated once, at the end
        assert 0 < train["validation_share"] < 1 and train["validation_seconds"] > 0
    table = (tmp_path / "scale.md").read_text()
    assert table.count("\n") == 4 and "| 6,000 |" in table
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_tree_rss_counts_the_children(tmp_path):
    """A parent that holds little and a child that holds 200 MB: the tree's RSS includes the child's."""
    child = "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"])
    try:
        deadline = time.monotonic() + 20
        while scale.tree_rss_bytes(parent.pid) < 200e6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scale.tree_rss_bytes(parent.pid) >= 200e6
    finally:
        with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        parent.wait()
