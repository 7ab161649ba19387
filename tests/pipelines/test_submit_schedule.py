"""`interest submit` and `interest schedule` against a local HTTP server that speaks the KFP v2beta1 REST API.

No Kubeflow Pipelines API server can run here (it needs Kubernetes, MySQL and object storage), so this module
serves the few v2beta1 endpoints kfp.Client calls (healthz, experiments, runs, recurringruns and their
:enable/:disable) on 127.0.0.1, records every request, and the tests check what the real client sent.
"""

from __future__ import annotations

import json
import uuid

import pytest

from pipelines.cli import main
from tests.support.json_api import serve_json

API = "/apis/v2beta1"


class FakeKfp:
    """In-memory state of the fake API server and the log of requests it answered."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}

    def handle(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        self.requests.append({"method": method, "path": path, "query": query, "body": body})
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{API}/experiments"):
            wanted = [p["stringValue"] for p in json.loads(query["filter"][0])["predicates"]
                      if p["key"] == "display_name"]
            found = [e for e in self.experiments.values() if e["display_name"] in wanted]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/experiments"):
            experiment = {**body, "experiment_id": str(uuid.uuid4())}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("POST", f"{API}/runs"):
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if (method, path) == ("POST", f"{API}/recurringruns"):
            recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            self.recurring[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if (method, path) == ("GET", f"{API}/recurringruns"):
            return 200, {"recurringRuns": list(self.recurring.values()), "total_size": len(self.recurring)}
        if method == "POST" and path.startswith(f"{API}/recurringruns/") and ":" in path:
            rid, _, verb = path.removeprefix(f"{API}/recurringruns/").partition(":")
            if rid in self.recurring and verb in ("enable", "disable"):
                self.recurring[rid]["mode"] = verb.upper()
                return 200, {}
        return 404, {"error": f"not served by the fake: {method} {path}", "code": 5}


@pytest.fixture
def kfp_server():
    """Yields (base URL, FakeKfp) for a threaded HTTP server on 127.0.0.1."""
    state = FakeKfp()

    with serve_json(state.handle) as url:
        yield url, state


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json: keep a developer's real one out of the test."""
    from kfp.client import client

    monkeypatch.setattr(client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))


def calls(state: FakeKfp) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in state.requests]


def test_submit_creates_experiment_then_run_with_arguments(kfp_server, capsys):
    url, state = kfp_server
    args = ["submit", "--host", url, "--experiment", "nightly", "--profile", "smoke", "--registry", "gs://models-bucket/registry",
            "--image", "registry.example.com/interest-pipeline:7", "--param", "train_config={max_steps: 3}"]
    assert main(args) == 0
    assert calls(state) == [("GET", f"{API}/healthz"), ("GET", f"{API}/experiments"), ("POST", f"{API}/experiments"),
                            ("POST", f"{API}/runs")]
    lookup = json.loads(state.requests[1]["query"]["filter"][0])
    assert lookup["predicates"][0]["stringValue"] == "nightly"
    experiment = state.requests[2]["body"]
    assert experiment["display_name"] == "nightly"
    run = state.requests[3]["body"]
    assert run["experiment_id"] == next(iter(state.experiments))
    params = run["runtime_config"]["parameters"]
    assert params["registry"] == "gs://models-bucket/registry"
    assert [v["name"] for v in params["variants"]] == ["baseline", "swiglu"] and params["dataset"] == "ml-100k"
    assert params["train_config"] == {"max_steps": 3}
    spec = run["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "interest-pipeline"
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.example.com/interest-pipeline:7"}
    assert f"submitted run {next(iter(state.runs))}" in capsys.readouterr().out

    # A second submission reuses the experiment.
    assert main(args) == 0
    assert calls(state)[-3:] == [("GET", f"{API}/healthz"), ("GET", f"{API}/experiments"), ("POST", f"{API}/runs")]
    assert len(state.experiments) == 1 and len(state.runs) == 2


def test_schedule_cron_one_at_a_time_no_catchup_then_list_pause_resume(kfp_server, capsys):
    url, state = kfp_server
    assert main(["schedule", "--host", url, "--cron", "0 3 * * *", "--registry", "gs://models-bucket/registry",
                 "--name", "interest-nightly"]) == 0
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns")
    recurring = state.requests[-1]["body"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # KFP's 6-field cron, seconds first
    assert int(recurring["max_concurrency"]) == 1
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["display_name"] == "interest-nightly"
    assert recurring["experiment_id"] in state.experiments
    assert recurring["pipeline_spec"]["root"]["dag"]["tasks"]
    assert recurring["runtime_config"]["parameters"]["registry"] == "gs://models-bucket/registry"
    rid = next(iter(state.recurring))
    capsys.readouterr()

    assert main(["schedule", "list", "--host", url]) == 0
    assert calls(state)[-1] == ("GET", f"{API}/recurringruns")
    listing = capsys.readouterr().out
    assert rid in listing and "0 0 3 * * *" in listing and "ENABLE" in listing

    assert main(["schedule", "pause", "--host", url, rid]) == 0
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns/{rid}:disable")
    assert state.recurring[rid]["mode"] == "DISABLE"
    assert main(["schedule", "resume", rid, "--host", url]) == 0
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns/{rid}:enable")
    assert state.recurring[rid]["mode"] == "ENABLE"
    # --host before the action works too
    assert main(["schedule", "--host", url, "list"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["schedule", "--cron", "0 3 * *", "--registry", "gs://models-bucket/r"], "--cron"),
    (["schedule", "--registry", "gs://models-bucket/r"], "--cron"),
    (["submit", "--registry", "gs://models-bucket/r", "--variants", "baseline,nope"], "nope"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "bogus=1"], "bogus"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "train_config={lr: -1}"], "lr"),
    (["submit", "--profile", "smoke"], "--registry"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "train_config={epochs: null, max_steps: 5}"], "train_config.epochs"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "model_overrides=d_model=8"], "model_overrides: expected List"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "accelerator_count=true"], "accelerator_count: expected Integer"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "accelerator_count=-1"], "accelerator_count: must be >= 0"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "cluster={launcher: slurm}"], "launcher"),
    (["submit", "--registry", "gs://../x"], "--registry"),
    (["submit", "--registry", "runs/registry"], "--registry: 'runs/registry' is a path on this machine"),
    (["schedule", "--cron", "0 3 * * *", "--registry", "gs://models-bucket/r", "--dataset", "pyproject.toml"],
     "--dataset: 'pyproject.toml' is a path on this machine"),
    (["submit", "--registry", "gs://models-bucket/r", "--param", "model_name=../../etc"], "model_name"),
])
def test_bad_requests_fail_before_any_call(kfp_server, capsys, argv, message):
    url, state = kfp_server
    assert main([*argv, "--host", url]) == 2
    assert message in capsys.readouterr().err
    assert state.requests == []


def test_vertex_without_the_gcp_extra_is_a_clear_error(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", None)  # as in an install without the gcp extra
    assert main(["submit", "--vertex", "--project", "p", "--region", "us-central1", "--pipeline-root", "gs://models-bucket/root",
                 "--registry", "gs://models-bucket/registry", "--profile", "smoke"]) == 2
    assert "pip install 'interest-pipeline[gcp]'" in capsys.readouterr().err
