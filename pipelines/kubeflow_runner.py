"""Publish, run and schedule the compiled pipeline on a Kubeflow Pipelines API server (kfp.Client).

A run or a schedule always targets an uploaded *pipeline version*, never an anonymous package: the pipeline
``interest-pipeline`` gets one version per compiled spec, named ``<commit>-<spec digest>`` (the image tag and the
first 8 hex digits of the YAML's sha256), so the UI shows which code every run ran, resubmitting the same commit
reuses its version, and a schedule moves to a new commit by being re-created on the new version.

Authenticated endpoints: ``token`` is sent as a bearer token (Kubeflow behind IAP, or a service-account token),
``cookies`` as the Cookie header (Dex / oauth2-proxy: ``authservice_session=...`` or ``oauth2_proxy_kubeflow=...``
copied from a logged-in browser), exactly as kfp.Client's ``existing_token`` and ``cookies`` do.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.configs import require

DEFAULT_EXPERIMENT = "interest"
DEFAULT_PIPELINE = "interest-pipeline"


@dataclass(frozen=True)
class Endpoint:
    """Where the KFP API is and how to authenticate to it."""

    host: str  # http(s):// URL of the KFP API (the central dashboard's /pipeline, or the ml-pipeline service)
    namespace: str | None = None  # the Kubeflow profile namespace (multi-user deployments)
    token: str | None = None  # bearer token (IAP: an OIDC identity token for the IAP client id)
    cookies: str | None = None  # Cookie header of a logged-in browser session (Dex: authservice_session=...)

    def __post_init__(self) -> None:
        require(bool(re.match(r"https?://", self.host or "")), "--host",
                f"must be an http(s):// URL of the KFP API, got {self.host!r}")


def kfp_client(endpoint: Endpoint):
    import kfp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=endpoint.host, namespace=endpoint.namespace or "kubeflow",
                          existing_token=endpoint.token, cookies=endpoint.cookies)


def version_name(package: str | Path) -> str:
    """``<commit>-<digest>``: the code's image tag and the compiled spec's first 8 sha256 hex digits (the same
    commit compiled with other flags is another version)."""
    from components.image import image_tag

    return f"{image_tag()}-{hashlib.sha256(Path(package).read_bytes()).hexdigest()[:8]}"


def _filter_by_name(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline(client, pipeline: str, namespace: str | None) -> str | None:
    """The id of the pipeline named ``pipeline`` in ``namespace`` (None: the shared pipelines), if there is one.
    kfp.Client.get_pipeline_id lists the shared pipelines only, so in a multi-user deployment it never finds a
    namespaced one and a second submit fails "already exists" (kubeflow/pipelines #10909)."""
    found = client.list_pipelines(page_size=2, filter=_filter_by_name(pipeline), namespace=namespace).pipelines or []
    require(len(found) <= 1, "--namespace", f"{len(found)} pipelines named {pipeline!r} in {namespace or 'shared'}")
    return found[0].pipeline_id if found else None


def publish_version(client, package: str | Path, pipeline: str = DEFAULT_PIPELINE,
                    namespace: str | None = None) -> tuple[str, str, str]:
    """Upload ``package`` as a version of the named pipeline of ``namespace`` (created on first use), or find the
    version this very spec already is; returns (pipeline id, version id, version name). A pipeline's versions
    belong to it, so looking the pipeline up in the namespace scopes them too."""
    name = version_name(package)
    pipeline_id = find_pipeline(client, pipeline, namespace)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline, namespace=namespace,
                                             description="Train, compare, gate and ship user-interest models").pipeline_id
    found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_filter_by_name(name))
    if found.pipeline_versions:
        return pipeline_id, found.pipeline_versions[0].pipeline_version_id, name
    version = client.upload_pipeline_version(str(package), pipeline_version_name=name, pipeline_id=pipeline_id,
                                             description=f"compiled from commit {name.rsplit('-', 1)[0]}")
    return pipeline_id, version.pipeline_version_id, name


def submit(endpoint: Endpoint, package: str | Path, arguments: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           service_account: str | None = None) -> tuple[str, str]:
    """Publish the package as a pipeline version and create one run of that version; returns (run id, version)."""
    client = kfp_client(endpoint)
    pipeline_id, version_id, version = publish_version(client, package, namespace=endpoint.namespace)
    experiment_id = client.create_experiment(experiment, namespace=endpoint.namespace).experiment_id
    run = client.run_pipeline(
        experiment_id, run_name or f"{DEFAULT_PIPELINE} {version} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
        params=arguments, pipeline_id=pipeline_id, version_id=version_id, pipeline_root=pipeline_root,
        enable_caching=enable_caching, service_account=service_account,
    )
    return run.run_id, version


def kfp_cron(cron: str) -> str:
    """KFP's scheduler reads 6-field cron (seconds first): ``0 3 * * *`` -> ``0 0 3 * * *``."""
    fields = cron.split()
    require(len(fields) in (5, 6), "--cron", f"expected 5 fields (min hour day month weekday) or 6, got {cron!r}")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


@dataclass(frozen=True)
class Scheduled:
    recurring_run_id: str
    version: str  # the pipeline version it runs
    replaced: tuple[str, ...]  # recurring runs of the same name that it replaced (now deleted)


def schedule(endpoint: Endpoint, package: str | Path, arguments: dict[str, Any], cron: str, name: str,
             experiment: str = DEFAULT_EXPERIMENT, pipeline_root: str | None = None,
             service_account: str | None = None) -> Scheduled:
    """Create the recurring run ``name`` on this package's pipeline version: one run at a time (a run never
    overlaps the previous one, which may still be moving the champion), no catch-up of missed slots after a pause.

    A recurring run cannot change its pipeline version in place, so a schedule of the same name that already
    exists is moved: the new one is created first, then the old ones are deleted (never a moment without one)."""
    cron = kfp_cron(cron)
    client = kfp_client(endpoint)
    pipeline_id, version_id, version = publish_version(client, package, namespace=endpoint.namespace)
    experiment_id = client.create_experiment(experiment, namespace=endpoint.namespace).experiment_id
    previous = [row["id"] for row in list_schedules(endpoint, client) if row["name"] == name]
    recurring = client.create_recurring_run(
        experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=1, no_catchup=True,
        params=arguments, pipeline_id=pipeline_id, version_id=version_id, pipeline_root=pipeline_root,
        service_account=service_account,
    )
    for old in previous:
        client.delete_recurring_run(old)
    return Scheduled(recurring.recurring_run_id, version, tuple(previous))


def list_schedules(endpoint: Endpoint, client=None) -> list[dict[str, Any]]:
    """Every recurring run: id, name, cron, mode (ENABLE/DISABLE), max concurrency, pipeline version id."""
    client = client or kfp_client(endpoint)
    rows, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=endpoint.namespace)
        for run in page.recurring_runs or []:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
            reference = run.pipeline_version_reference
            rows.append({"id": run.recurring_run_id, "name": run.display_name, "cron": cron, "mode": run.mode,
                         "max_concurrency": run.max_concurrency, "no_catchup": run.no_catchup,
                         "version_id": reference.pipeline_version_id if reference else None})
        token = page.next_page_token
        if not token:
            return rows


def set_schedule_enabled(endpoint: Endpoint, recurring_run_id: str, enabled: bool) -> None:
    client = kfp_client(endpoint)
    if enabled:
        client.enable_recurring_run(recurring_run_id)
    else:
        client.disable_recurring_run(recurring_run_id)
