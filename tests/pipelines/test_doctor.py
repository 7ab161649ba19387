"""`interest doctor` and the store check of `interest submit`: against moto's S3 server (which enforces
``If-None-Match``) and a proxy in front of it that drops the condition headers (an S3 store that ignores them, as
the MinIO of Kubeflow 2.5-2.14 manifests does), a fake OCI registry and a fake Kubernetes API that answers
discovery and SelfSubjectAccessReviews."""

from __future__ import annotations

import contextlib
import http.client
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlparse

import pytest
import yaml

from core import storage
from core.configs import ConfigError
from pipelines import preflight
from pipelines.cli import main
from tests.support.json_api import serve, serve_json

CONDITIONS = ("if-none-match", "if-match")


@contextlib.contextmanager
def ignoring_conditions(upstream: str):
    """An S3 endpoint in front of ``upstream`` that forwards every request without its conditional headers."""
    target = urlparse(upstream)

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in CONDITIONS}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args):
            pass

    with serve(Proxy) as url:
        yield url


@pytest.fixture
def careless_store(s3_bucket, s3_server, monkeypatch):
    """``s3_bucket`` reached through the header-dropping proxy; yields the bucket's URI."""
    with ignoring_conditions(s3_server) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        storage.s3_client.cache_clear()
        yield s3_bucket
    storage.s3_client.cache_clear()


def test_a_store_that_enforces_conditional_writes_passes_and_keeps_nothing(s3_bucket):
    preflight.check_conditional_writes(f"{s3_bucket}/root")
    assert storage.list_files(f"{s3_bucket}/root") == []  # the probe is removed


def test_a_store_that_ignores_them_is_refused_naming_it(careless_store):
    with pytest.raises(ConfigError, match=r"ignores conditional writes") as error:
        preflight.check_conditional_writes(f"{careless_store}/root")
    assert careless_store in str(error.value) and "127.0.0.1" in str(error.value)
    assert storage.list_files(f"{careless_store}/root") == []


def test_submit_refuses_a_store_that_ignores_conditional_writes(careless_store, capsys):
    argv = ["submit", "--host", "http://127.0.0.1:9", "--profile", "smoke", "--pipeline-root",
            f"{careless_store}/root", "--registry", f"{careless_store}/registry", "--dataset",
            f"{careless_store}/events.parquet", "--image", "registry.example.com/team/interest-pipeline:3f2a9c1d0e4b",
            "--s3-endpoint", "http://seaweedfs.kubeflow:8333"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ignores conditional writes" in err and careless_store in err


def test_the_rbac_file_grants_what_a_run_needs():
    role, binding = yaml.safe_load_all(open("deploy/rbac.yaml"))
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    needed = {(a.group, a.resource, a.verb) for a in preflight.REQUIRED_ACCESS}
    assert needed <= granted, needed - granted
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor"}]


class FakeCluster:
    """Discovery for kubeflow.org/v1 and tensorboard.kubeflow.org/v1alpha1 (absent groups answer 404), and
    SelfSubjectAccessReviews allowed for ``allowed`` (group, resource, verb) only."""

    def __init__(self, groups: dict[str, list[str]], allowed: set[tuple[str, str, str]]):
        self.groups, self.allowed, self.reviews = groups, allowed, []

    def handle(self, method, path, query, body):
        if method == "GET" and path.startswith("/apis/"):
            group_version = path.removeprefix("/apis/")
            if group_version not in self.groups:
                return 404, {"kind": "Status", "code": 404}
            return 200, {"kind": "APIResourceList", "groupVersion": group_version, "resources": [
                {"name": name, "namespaced": True, "kind": name.title(), "singularName": "", "verbs": ["create"]}
                for name in self.groups[group_version]]}
        if method == "POST" and path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
            attributes = body["spec"]["resourceAttributes"]
            self.reviews.append(attributes)
            resource = attributes["resource"] + (f"/{attributes['subresource']}" if attributes.get("subresource")
                                                 else "")
            allowed = (attributes.get("group", ""), resource, attributes["verb"]) in self.allowed
            return 201, {**body, "status": {"allowed": allowed}}
        return 404, {"kind": "Status", "code": 404}


def registry_handle(method, path, query, body):
    """An OCI registry holding team/interest-pipeline:good only."""
    if path == "/v2/team/interest-pipeline/manifests/good":
        return 200, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    return 404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]}


def doctor(monkeypatch, cluster: FakeCluster, image_tag: str, root: str) -> int:
    from kubernetes import client

    with serve_json(cluster.handle) as kubernetes_url, serve_json(registry_handle) as registry_url:
        monkeypatch.setattr(preflight, "kubernetes_client", lambda *args: client.ApiClient(
            client.Configuration(host=kubernetes_url)))
        registry = registry_url.removeprefix("http://")
        return main(["doctor", "--image", f"{registry}/team/interest-pipeline:{image_tag}", "--pipeline-root", root,
                     "--namespace", "team-a", "--service-account", "default-editor"])


EVERYTHING = {(a.group, a.resource, a.verb) for a in preflight.REQUIRED_ACCESS}
SERVED = {"kubeflow.org/v1": ["pytorchjobs", "pytorchjobs/status"],
          "tensorboard.kubeflow.org/v1alpha1": ["tensorboards"]}


def test_doctor_passes_on_a_ready_cluster(monkeypatch, s3_bucket, capsys):
    cluster = FakeCluster(SERVED, EVERYTHING)
    assert doctor(monkeypatch, cluster, "good", f"{s3_bucket}/root") == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("ok  ") == 1 + 2 + len(preflight.REQUIRED_ACCESS) + 1
    assert {review["namespace"] for review in cluster.reviews} == {"team-a"}
    assert {"resource": "pods", "subresource": "log", "verb": "get", "namespace": "team-a", "group": ""} in [
        {k: v for k, v in r.items()} for r in cluster.reviews]


def test_doctor_names_each_missing_piece(monkeypatch, careless_store, capsys):
    cluster = FakeCluster({"kubeflow.org/v1": ["pytorchjobs"]},
                          EVERYTHING - {("kubeflow.org", "pytorchjobs", "patch")})
    assert doctor(monkeypatch, cluster, "missing", f"{careless_store}/root") == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 4, failed
    assert "not found" in failed[0] and "push it" in failed[0]
    assert "tensorboards.tensorboard.kubeflow.org served" in failed[1] and "install its operator" in failed[1]
    assert "may patch pytorchjobs.kubeflow.org in team-a" in failed[2] and "deploy/rbac.yaml" in failed[2]
    assert "ignores conditional writes" in failed[3]
