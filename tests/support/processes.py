"""Processes as a user or a cluster starts them: ``interest`` commands in their own process, and a free port for
an env:// rendezvous."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def interest(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """``interest ARGV`` in its own process, as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
