"""`interest tensorboard`: every variant's logs of a local run directory, or of a cluster run on object storage
(a real GCS emulator and a real S3 server on 127.0.0.1), served on 127.0.0.1 and read back through TensorBoard's
own HTTP API; and `--kubeflow RUN_ID` creating a Kubeflow Tensorboard resource through the real kubernetes client
(loaded from a kubeconfig) against a local server that serves its custom-object endpoint (no cluster runs here)."""

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
from tests.support.processes import free_port


def write_scalars(log_dir: Path, scale: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for step in range(3):
            writer.add_scalar("valid/recall@10", scale * step, step)


def write_run(run_dir: Path) -> dict[str, Path]:
    """A run directory laid out as kfp.local leaves it, with real SummaryWriter logs for two variants."""
    logs = {}
    for i, variant in enumerate(("baseline", "swiglu")):
        task = run_dir / "interest-pipeline-2026-01-01-00-00-00" / f"for-loop-1-iteration-{i}" / "train"
        (task / "model").mkdir(parents=True)
        (task / "model" / "model.pt").write_bytes(b"weights, not logs")
        logs[variant] = task / "tensorboard" / variant
        write_scalars(logs[variant], 0.1 * (i + 1))
    return logs


def get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url.replace("@", "%40"), timeout=timeout) as response:
        return json.loads(response.read())


def wait_for_runs(port: int, proc: subprocess.Popen, expected: list[str], timeout: float = 90) -> list[str]:
    deadline, runs = time.monotonic() + timeout, []
    while time.monotonic() < deadline and sorted(runs) != expected:
        time.sleep(0.5)
        try:
            runs = get_json(f"http://127.0.0.1:{port}/data/runs", timeout=2)
        except OSError:
            assert proc.poll() is None, "tensorboard exited"
    return sorted(runs)


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
        assert wait_for_runs(port, proc, ["baseline", "swiglu"]) == ["baseline", "swiglu"]
        points = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=swiglu&tag=valid/recall@10")
        assert [p[1] for p in points] == [0, 1, 2] and abs(points[-1][2] - 0.4) < 1e-6
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with pytest.raises(OSError):  # stopping the command stopped TensorBoard itself: nothing left listening
        urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)


def test_a_directory_without_logs_is_a_usage_error(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path)]) == 2
    assert "no TensorBoard logs" in capsys.readouterr().err


@pytest.mark.parametrize("store", ["gs", "s3"])
def test_serves_a_cluster_runs_logs_straight_from_object_storage(store, request, tmp_path):
    """A cluster run's logs at <pipeline root>/runs/<run id>/tensorboard/<variant>/ (what the train task writes),
    served from the GCS emulator or the S3 server with the storage settings of the pipeline; a variant whose
    logs arrive later shows up at the next reload; stopping the command stops TensorBoard."""
    from core import storage

    bucket = request.getfixturevalue({"gs": "gcs_bucket", "s3": "s3_bucket"}[store])
    logs = f"{bucket}/pipeline-root/runs/7c1e/tensorboard"
    write_scalars(tmp_path / "baseline", 0.1)
    storage.copy_tree(str(tmp_path / "baseline"), f"{logs}/baseline")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "tensorboard", logs, "--port", str(port),
                             "--reload-seconds", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_runs(port, proc, ["baseline"]) == ["baseline"], proc.stderr
        points = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=baseline&tag=valid/recall@10")
        assert [p[1] for p in points] == [0, 1, 2] and abs(points[-1][2] - 0.2) < 1e-6
        write_scalars(tmp_path / "swiglu", 0.3)  # another variant finishes while TensorBoard runs
        storage.copy_tree(str(tmp_path / "swiglu"), f"{logs}/swiglu")
        assert wait_for_runs(port, proc, ["baseline", "swiglu"]) == ["baseline", "swiglu"]
        points = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=swiglu&tag=valid/recall@10")
        assert abs(points[-1][2] - 0.6) < 1e-6
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    with pytest.raises(OSError):  # TensorBoard went with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)


def test_kubeflow_tensorboard_resource_over_a_runs_logs(tmp_path, monkeypatch, capsys):
    from tests.support.json_api import serve_json

    created: dict[str, dict] = {}

    def handle(method, path, query, body):
        if method == "POST" and path == "/apis/tensorboard.kubeflow.org/v1alpha1/namespaces/team/tensorboards":
            if body["metadata"]["name"] in created:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
            created[body["metadata"]["name"]] = body
            return 201, body
        return 404, {"kind": "Status", "code": 404}

    with serve_json(handle) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": "team"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        argv = ["tensorboard", "--kubeflow", "7C1E-run", "--pipeline-root", "minio://mlpipeline/v2/artifacts",
                "--namespace", "team", "--dashboard", "https://kubeflow.example.com/"]
        assert main(argv) == 0
        assert main(argv) == 0  # it exists already: kept
    assert created == {"interest-7c1e-run": {
        "apiVersion": "tensorboard.kubeflow.org/v1alpha1", "kind": "Tensorboard",
        "metadata": {"name": "interest-7c1e-run", "namespace": "team",
                     "labels": {"app.kubernetes.io/part-of": "interest-pipeline"}},
        "spec": {"logspath": "s3://mlpipeline/v2/artifacts/runs/7C1E-run/tensorboard/"}}}
    out = capsys.readouterr().out
    assert "https://kubeflow.example.com/tensorboard/team/interest-7c1e-run/" in out
    assert main(["tensorboard", "--kubeflow", "r", "--pipeline-root", "runs/", "--namespace", "team"]) == 2


@pytest.mark.parametrize("key", ["../../escaped.txt", "variant/../../../escaped.txt", "variant//x", "./x"])
def test_an_object_key_that_climbs_out_of_the_mirror_is_refused(s3_bucket, tmp_path, key):
    """Whoever can write to the pipeline root must not write files on the reader's machine: a key holding '../'
    below the logs prefix (S3 keys are plain strings: moto stores it as given) is refused, nothing is written."""
    from core import storage
    from core.configs import ConfigError
    from pipelines.tensorboard import mirror

    logs = f"{s3_bucket}/pipeline-root/runs/7c1e/tensorboard"
    bucket = s3_bucket.removeprefix("s3://")
    storage.s3_client().put_object(Bucket=bucket, Key=f"pipeline-root/runs/7c1e/tensorboard/{key}", Body=b"owned")
    assert any(k["Key"].endswith(key) for k in storage.s3_client().list_objects_v2(Bucket=bucket)["Contents"])
    local = tmp_path / "a" / "b" / "mirror"
    local.mkdir(parents=True)
    with pytest.raises(ConfigError, match="an object key with a '..', '.' or empty part"):
        mirror(logs, local)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
