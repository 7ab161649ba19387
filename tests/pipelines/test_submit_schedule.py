"""`interest submit` and `interest schedule` against a local HTTP server that speaks the KFP v2beta1 REST API, and
against a recording stand-in of the aiplatform SDK for --vertex.

No Kubeflow Pipelines API server can run here (it needs Kubernetes, MySQL and object storage), so this module
serves the v2beta1 endpoints kfp.Client calls (healthz, experiments, pipelines and their upload, pipeline versions,
runs, recurringruns with :enable/:disable and delete) on 127.0.0.1, records every request and its headers, and the
tests check what the real client sent. Vertex AI: tests/pipelines/test_vertex.py, with the real SDK.
"""

from __future__ import annotations

import json
import uuid

import pytest

from pipelines.cli import main
from tests.support.json_api import serve_json

API = "/apis/v2beta1"
IMAGE = "registry.example.com/team/interest-pipeline:3f2a9c1d0e4b"
DATA = "gs://models-bucket/events/ml-100k.parquet"


def load_spec(text: str) -> dict:
    """The pipeline spec of an uploaded package (its first YAML document; the second is the platform spec)."""
    import yaml

    return next(yaml.safe_load_all(text))


def namespace_of(query: dict) -> str:
    return query.get("namespace", [""])[0]


def named(query: dict) -> list[str]:
    return [p["stringValue"] for p in json.loads(query["filter"][0])["predicates"] if p["key"] == "display_name"]


class FakeKfp:
    """In-memory state of the fake API server and the log of requests it answered."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}

    def _version(self, pipeline_id: str, name: str, spec: dict | None) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
                   "pipeline_spec": spec}
        self.versions[version["pipeline_version_id"]] = version
        return version

    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        self.requests.append({"method": method, "path": path, "query": query, "body": body})
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{API}/experiments"):
            found = [e for e in self.experiments.values() if e["display_name"] in named(query)]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/experiments"):
            experiment = {**body, "experiment_id": str(uuid.uuid4())}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("GET", f"{API}/pipelines"):
            # Pipelines belong to a namespace (multi-user); no namespace lists the shared ones only.
            found = [p for p in self.pipelines.values()
                     if p["display_name"] in named(query) and p["namespace"] == namespace_of(query)]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/pipelines/upload"):
            pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": query["name"][0],
                        "namespace": namespace_of(query)}
            if any((p["display_name"], p["namespace"]) == (pipeline["display_name"], pipeline["namespace"])
                   for p in self.pipelines.values()):  # the backend's unique (name, namespace)
                return 409, {"error": f"pipeline {pipeline['display_name']} already exists", "code": 6}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            # As the backend does: the upload also creates a first version, named after the pipeline.
            self._version(pipeline["pipeline_id"], pipeline["display_name"], load_spec(body["uploadfile"]))
            return 200, pipeline
        if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[-2]
            found = [v for v in self.versions.values()
                     if v["pipeline_id"] == pipeline_id and v["display_name"] in named(query)]
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
            return 200, self._version(query["pipelineid"][0], query["name"][0], load_spec(body["uploadfile"]))
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
        if method == "DELETE" and path.startswith(f"{API}/recurringruns/"):
            self.recurring.pop(path.removeprefix(f"{API}/recurringruns/"), None)
            return 200, {}
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

    with serve_json(state.handle, state.headers) as url:
        yield url, state


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json: keep a developer's real one out of the test."""
    from kfp.client import client

    monkeypatch.setattr(client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))


def calls(state: FakeKfp) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in state.requests]


CLUSTER = ["--registry", "gs://models-bucket/registry", "--dataset", DATA, "--image", IMAGE,
           "--pipeline-root", "gs://models-bucket/root"]


def test_submit_uploads_a_version_per_commit_and_runs_it(kfp_server, capsys):
    url, state = kfp_server
    args = ["submit", "--host", url, "--experiment", "nightly", "--profile", "smoke", *CLUSTER,
            "--param", "train_config={max_steps: 3}", "--service-account", "pipeline-runner"]
    assert main(args) == 0
    assert calls(state) == [
        ("GET", f"{API}/healthz"), ("GET", f"{API}/pipelines"), ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/{next(iter(state.pipelines))}/versions"), ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"), ("POST", f"{API}/experiments"), ("POST", f"{API}/runs")]
    (pipeline,) = state.pipelines.values()
    assert pipeline["display_name"] == "interest-pipeline"
    from components.image import TAG

    ours = [v for v in state.versions.values() if v["display_name"] != "interest-pipeline"]
    (version,) = ours
    assert version["display_name"].startswith(f"{TAG}-") and len(version["display_name"]) == len(TAG) + 9
    assert {e["container"]["image"] for e in version["pipeline_spec"]["deploymentSpec"]["executors"].values()} == {
        IMAGE}
    run = state.requests[-1]["body"]
    assert run["pipeline_version_reference"] == {"pipeline_id": pipeline["pipeline_id"],
                                                 "pipeline_version_id": version["pipeline_version_id"]}
    assert "pipeline_spec" not in run  # the run names the uploaded version instead of carrying a package
    assert run["experiment_id"] == next(iter(state.experiments))
    assert run["service_account"] == "pipeline-runner"
    assert run["runtime_config"]["pipeline_root"] == "gs://models-bucket/root"
    params = run["runtime_config"]["parameters"]
    assert params["registry"] == "gs://models-bucket/registry" and params["dataset"] == DATA
    assert [v["name"] for v in params["variants"]] == ["baseline", "swiglu"]
    assert params["train_config"] == {"max_steps": 3}
    assert f"submitted run {next(iter(state.runs))} of interest-pipeline version {version['display_name']}" in (
        capsys.readouterr().out)

    # The same commit again: the same pipeline, the same version, the same experiment; only a new run.
    assert main(args) == 0
    assert calls(state)[-5:] == [("GET", f"{API}/healthz"), ("GET", f"{API}/pipelines"),
                                 ("GET", f"{API}/pipelines/{pipeline['pipeline_id']}/versions"),
                                 ("GET", f"{API}/experiments"), ("POST", f"{API}/runs")]
    assert len(state.pipelines) == 1 and len(state.versions) == 2 and len(state.runs) == 2


def test_authenticated_endpoints_get_the_token_and_the_session_cookie(kfp_server):
    """IAP wants a bearer token, Dex / oauth2-proxy a session cookie: every request carries what was given."""
    url, state = kfp_server
    assert main(["submit", "--host", url, "--profile", "smoke", *CLUSTER, "--token", "id-token-for-iap",
                 "--cookies", "authservice_session=abc123"]) == 0
    assert len(state.headers) == len(state.requests) >= 5
    assert {h.get("authorization") for h in state.headers} == {"Bearer id-token-for-iap"}
    assert {h.get("cookie") for h in state.headers} == {"authservice_session=abc123"}


def test_schedule_targets_a_version_and_moves_to_a_newer_one(kfp_server, capsys):
    url, state = kfp_server
    base = ["schedule", "--host", url, "--cron", "0 3 * * *", *CLUSTER, "--name", "interest-nightly"]
    assert main(base) == 0
    recurring = state.requests[-1]["body"]
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"  # KFP's 6-field cron, seconds first
    assert int(recurring["max_concurrency"]) == 1 and recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE" and recurring["display_name"] == "interest-nightly"
    assert recurring["experiment_id"] in state.experiments
    first = recurring["pipeline_version_reference"]["pipeline_version_id"]
    assert state.versions[first]["display_name"] != "interest-pipeline" and "pipeline_spec" not in recurring
    assert recurring["runtime_config"]["parameters"]["registry"] == "gs://models-bucket/registry"
    (old_id,) = state.recurring

    # New code (here: another compiled spec) under the same name: a new version, and the schedule moves to it.
    assert main([*base, "--parallelism", "2"]) == 0
    (new_id,) = state.recurring
    assert new_id != old_id and calls(state)[-1] == ("DELETE", f"{API}/recurringruns/{old_id}")
    moved = state.recurring[new_id]["pipeline_version_reference"]["pipeline_version_id"]
    assert moved != first and state.versions[moved]["pipeline_spec"]["root"]["dag"]["tasks"]
    out = capsys.readouterr().out
    assert f"on version {state.versions[moved]['display_name']}" in out and f"moved from recurring run {old_id}" in out

    assert main(["schedule", "list", "--host", url]) == 0
    assert calls(state)[-1] == ("GET", f"{API}/recurringruns")
    listing = capsys.readouterr().out
    assert new_id in listing and "0 0 3 * * *" in listing and "ENABLE" in listing and moved in listing

    assert main(["schedule", "pause", "--host", url, new_id]) == 0
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns/{new_id}:disable")
    assert state.recurring[new_id]["mode"] == "DISABLE"
    assert main(["schedule", "resume", new_id, "--host", url]) == 0
    assert calls(state)[-1] == ("POST", f"{API}/recurringruns/{new_id}:enable")
    assert state.recurring[new_id]["mode"] == "ENABLE"
    # --host before the action works too
    assert main(["schedule", "--host", url, "list"]) == 0


R = ["--registry", "gs://models-bucket/r", "--image", IMAGE, "--dataset", DATA, "--pipeline-root", "gs://b/root"]


@pytest.mark.parametrize("argv, message", [
    (["schedule", "--cron", "0 3 * *", *R], "--cron"),
    (["schedule", *R], "--cron"),
    (["submit", *R, "--variants", "baseline,nope"], "nope"),
    (["submit", *R, "--param", "bogus=1"], "bogus"),
    (["submit", *R, "--param", "train_config={lr: -1}"], "lr"),
    (["submit", "--profile", "smoke", "--image", IMAGE, "--dataset", DATA, "--pipeline-root", "gs://b/r"],
     "--registry"),
    (["submit", *R, "--param", "train_config={epochs: null, max_steps: 5}"], "train_config.epochs"),
    (["submit", *R, "--param", "model_overrides=d_model=8"], "model_overrides: expected List"),
    (["submit", *R, "--param", "accelerator_count=true"], "accelerator_count: expected String"),
    (["submit", *R, "--param", "accelerator_count=-1"], "accelerator_count: must be a whole number"),
    (["submit", *R, "--param", "cluster={launcher: slurm}"], "launcher"),
    (["submit", *R, "--param", "cluster={launcher: vertex}"], "cluster.staging_bucket"),
    (["submit", *R, "--param", "cluster={launcher: vertex, staging_bucket: 'gs://s', accelerator_type: NVIDIA_L4, "
      "gpus_per_node: 1, machine_type: n1-standard-8}"], "cluster.machine_type"),
    (["submit", *R, "--registry", "gs://../x"], "--registry"),
    (["submit", *R, "--registry", "runs/registry"], "--registry: 'runs/registry' is a path on this machine"),
    (["schedule", "--cron", "0 3 * * *", *R, "--dataset", "pyproject.toml"],
     "--dataset: 'pyproject.toml' is a path on this machine"),
    (["submit", *R, "--dataset", "ml-1m"], "--dataset: 'ml-1m' would be fetched from a package index"),
    (["submit", *R, "--dataset", "https://example.com/events.csv"], "unsupported scheme https://"),
    (["submit", *R, "--pipeline-root", "hdfs://nn/root"], "--pipeline-root: 'hdfs://nn/root' uses the unsupported"),
    (["submit", *R, "--pipeline-root", "s3://b/root", "--param", "beam_args=[--runner=DataflowRunner, --project=p]"],
     "--pipeline-root: DataflowRunner writes the preprocessed data to its artifact's URI"),
    (["submit", *R, "--param", "model_name=../../etc"], "model_name"),
    (["submit", *R, "--image", "interest-pipeline:3f2a9c1d0e4b"], "--image: 'interest-pipeline:3f2a9c1d0e4b' has no "
     "registry host"),
    (["submit", *R, "--image", "ghcr.io/acme/interest-pipeline:3f2a9c1d0e4b-dirty"], "does not say which code"),
    (["schedule", "--cron", "0 3 * * *", *R, "--image", "ghcr.io/acme/interest-pipeline"], "has no tag"),
    (["submit", *R, "--s3-endpoint", "minio-service:9000"], "--s3-endpoint: must be an http(s):// URL"),
    (["submit", *R, "--pipeline-root", "minio://mlpipeline/v2/artifacts"], "--s3-endpoint: is required"),
    (["submit", "--registry", "gs://b/r", "--image", IMAGE, "--dataset", DATA], "--pipeline-root: is required"),
])
def test_bad_requests_fail_before_any_call(kfp_server, capsys, argv, message):
    url, state = kfp_server
    assert main([*argv, "--host", url]) == 2
    assert message in capsys.readouterr().err
    assert state.requests == []


def test_a_second_submit_in_a_namespace_adds_a_version_to_its_pipeline(kfp_server, capsys):
    """Multi-user Kubeflow: the pipeline lives in the profile namespace, so it is looked up there (a lookup among
    the shared pipelines finds nothing, and uploading it again fails "already exists")."""
    url, state = kfp_server
    base = ["submit", "--host", url, "--namespace", "team-a", "--profile", "smoke", *CLUSTER]
    assert main(base) == 0
    (pipeline,) = state.pipelines.values()
    assert pipeline["namespace"] == "team-a"
    assert main([*base, "--parallelism", "2"]) == 0  # other flags: another spec, so another version
    assert len(state.pipelines) == 1
    ours = [v for v in state.versions.values() if v["display_name"] != "interest-pipeline"]
    assert len(ours) == 2 and {v["pipeline_id"] for v in ours} == {pipeline["pipeline_id"]}
    assert len(state.runs) == 2
    # Another namespace gets its own pipeline.
    assert main(["submit", "--host", url, "--namespace", "team-b", "--profile", "smoke", *CLUSTER]) == 0
    assert sorted(p["namespace"] for p in state.pipelines.values()) == ["team-a", "team-b"]
