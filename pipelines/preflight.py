"""Checks a person runs before the first cluster run (`interest doctor`), each against the platform itself: the
image is in its registry, the Kubernetes API serves the resources a run creates and lets the service account
create them, and the artifact store enforces the conditional writes the registry pointer, version claims and
checkpoint locks rely on.

A store that ignores ``If-None-Match: *`` (MinIO releases older than S3's conditional writes, which the
Kubeflow 2.5-2.14 manifests ship) lets two writers both "win": two runs could both move the champion, or both
hold one checkpoint directory. `interest submit` refuses such a store too (check_conditional_writes).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from core import storage
from core.configs import ConfigError


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str  # what was checked
    ok: bool
    detail: str  # what was found, or what to do about it


@dataclass(frozen=True)
class Access:
    """A Kubernetes permission a run needs in its namespace."""

    group: str
    resource: str
    verb: str
    why: str


# What the run's pods (train tasks launching PyTorchJobs) and `interest tensorboard --kubeflow` do in the
# namespace; deploy/rbac.yaml grants exactly these.
REQUIRED_ACCESS = (
    *(Access("kubeflow.org", "pytorchjobs", verb, "cluster={launcher: pytorchjob}")
      for verb in ("create", "get", "patch", "delete")),
    Access("", "pods", "get", "the PyTorchJob's owner and storage settings"),
    Access("", "pods/log", "get", "the master's log in the task's log"),
    Access("tensorboard.kubeflow.org", "tensorboards", "create", "interest tensorboard --kubeflow"),
)
# group/version -> the resources a run needs from it (served only when its operator's CRDs are installed).
REQUIRED_RESOURCES = {"kubeflow.org/v1": "pytorchjobs", "tensorboard.kubeflow.org/v1alpha1": "tensorboards"}


def check_conditional_writes(uri: str) -> None:
    """ConfigError naming the store when it accepts a second ``If-None-Match: *`` PUT of one object (it ignores
    conditional writes). Writes a probe object below ``uri`` and removes it. GCS preconditions and local locks
    always hold: only S3-compatible stores are probed."""
    if not storage.is_s3(uri):
        return
    probe = storage.join(uri, ".interest-preflight", f"{uuid.uuid4().hex}.json")
    try:
        storage.write_if_generation(probe, b'{"writer": 1}', 0)
        try:
            storage.write_if_generation(probe, b'{"writer": 2}', 0)
        except storage.GenerationMismatch:
            return
        endpoint = storage.s3_client().meta.endpoint_url
        raise ConfigError(f"{uri}: the store at {endpoint} ignores conditional writes (a second PUT with "
                          "If-None-Match: * was accepted), so two runs could both move the champion or hold one "
                          "lock; upgrade it (MinIO from late 2024, SeaweedFS) or use another store")
    finally:
        storage.delete(probe)


def store_checks(uris: dict[str, str]) -> list[Check]:
    checks = []
    for flag, uri in uris.items():
        if not storage.is_remote(uri):
            continue
        try:
            check_conditional_writes(uri)
            checks.append(Check(f"{flag} enforces conditional writes", True, uri))
        except ConfigError as exc:
            checks.append(Check(f"{flag} enforces conditional writes", False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - unreachable or refused: report it, check the rest
            checks.append(Check(f"{flag} enforces conditional writes", False, f"{uri}: {type(exc).__name__}: {exc}"))
    return checks


# ---------------------------------------------------------------------------------------------- the image
def parse_image(image: str) -> tuple[str, str, str]:
    """(registry host, repository, tag or digest) of a reference with a registry host."""
    name, at, digest = image.partition("@")
    host, _, path = name.partition("/")
    repository, colon, tag = path.rpartition(":") if re.search(r":[^/]+$", path) else (path, "", "")
    return host, repository, digest if at else tag


def image_check(image: str, timeout: float = 15.0) -> Check:
    """Whether the registry has the image's manifest (the OCI distribution API, anonymously or with the token
    the registry's challenge offers). A private registry that wants credentials is reported as unverified."""
    host, repository, reference = parse_image(image)
    scheme = "http" if host.split(":")[0] in ("localhost", "127.0.0.1") else "https"
    url = f"{scheme}://{host}/v2/{repository}/manifests/{reference}"
    accept = ", ".join(("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v2+json"))
    headers = {"Accept": accept}
    for _ in range(2):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout):
                return Check("image exists in its registry", True, image)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return Check("image exists in its registry", False, f"{image}: not found at {host} (push it)")
            challenge = exc.headers.get("WWW-Authenticate", "") if exc.code == 401 else ""
            token = _anonymous_token(challenge, timeout) if challenge and "Authorization" not in headers else None
            if not token:
                return Check("image exists in its registry", False,
                             f"{image}: {host} answered {exc.code} (a private registry: check the cluster's pull "
                             "secret instead)")
            headers["Authorization"] = f"Bearer {token}"
        except OSError as exc:
            return Check("image exists in its registry", False, f"{image}: {host} unreachable: {exc}")
    return Check("image exists in its registry", False, f"{image}: {host} refused the anonymous token")


def _anonymous_token(challenge: str, timeout: float) -> str | None:
    """The token a ``Bearer realm=...,service=...,scope=...`` challenge hands out without credentials."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if not challenge.startswith("Bearer") or "realm" not in fields:
        return None
    query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in fields.items() if k in ("service", "scope"))
    try:
        with urllib.request.urlopen(f"{fields['realm']}?{query}", timeout=timeout) as response:
            body = json.load(response)
    except (OSError, ValueError):
        return None
    return body.get("token") or body.get("access_token")


# ----------------------------------------------------------------------------------------------- Kubernetes
def kubernetes_checks(api_client, namespace: str) -> list[Check]:
    """The API answers, serves the custom resources a run creates, and lets the caller (the service account, when
    run as it or impersonating it) do everything in REQUIRED_ACCESS in ``namespace`` (SelfSubjectAccessReview)."""
    from kubernetes import client

    checks = []
    custom = client.CustomObjectsApi(api_client)
    for group_version, resource in REQUIRED_RESOURCES.items():
        group, version = group_version.split("/")
        try:
            served = {r.name for r in custom.get_api_resources(group, version).resources}
            found = resource in served
            checks.append(Check(f"{resource}.{group} served", found, group_version if found else
                                f"{group_version} serves {', '.join(sorted(served)) or 'nothing'}"))
        except Exception as exc:  # noqa: BLE001 - a 404 (no CRD) or an unreachable API: say which
            status = getattr(exc, "status", None)
            detail = (f"{group_version} not served: install its operator's CRDs" if status == 404
                      else f"Kubernetes API: {type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            checks.append(Check(f"{resource}.{group} served", False, detail))
    authorization = client.AuthorizationV1Api(api_client)
    for access in REQUIRED_ACCESS:
        resource, _, subresource = access.resource.partition("/")
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace=namespace, group=access.group,
                                                            resource=resource, subresource=subresource or None,
                                                            verb=access.verb)))
        name = f"may {access.verb} {access.resource}{'.' + access.group if access.group else ''} in {namespace}"
        try:
            status = authorization.create_self_subject_access_review(review).status
            checks.append(Check(name, bool(status.allowed), access.why if status.allowed else
                                f"denied ({status.reason or 'no rule allows it'}): kubectl apply -n {namespace} "
                                "-f deploy/rbac.yaml"))
        except Exception as exc:  # noqa: BLE001 - report and go on
            checks.append(Check(name, False, f"Kubernetes API: {type(exc).__name__}: {exc}"))
    return checks


def kubernetes_client(service_account: str | None, namespace: str, context: str | None = None):
    """An ApiClient from the kubeconfig (or in-cluster); ``service_account``: impersonate it, as the run's pods
    authenticate (Kubernetes' Impersonate-User header; the caller needs `impersonate` on serviceaccounts)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)
    except Exception:  # noqa: BLE001 - no kubeconfig: inside a pod
        config.load_incluster_config()
    api_client = client.ApiClient()
    if service_account:
        api_client.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{service_account}")
    return api_client


def format_report(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)
