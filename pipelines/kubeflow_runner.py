"""Submit and schedule the compiled pipeline on a Kubeflow Pipelines API server (kfp.Client)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from core.configs import require

DEFAULT_EXPERIMENT = "interest"


def kfp_client(host: str, namespace: str | None = None):
    import kfp

    require(bool(re.match(r"https?://", host)), "--host", f"must be an http(s):// URL of the KFP API, got {host!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def submit(host: str, package: str | Path, arguments: dict[str, Any], experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, pipeline_root: str | None = None, enable_caching: bool | None = None,
           namespace: str | None = None) -> str:
    """Create a run of the compiled pipeline on a Kubeflow Pipelines API server; returns the run id."""
    client = kfp_client(host, namespace)
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment, namespace=namespace,
        pipeline_root=pipeline_root, enable_caching=enable_caching,
    )
    return result.run_id


def kfp_cron(cron: str) -> str:
    """KFP's scheduler reads 6-field cron (seconds first): ``0 3 * * *`` -> ``0 0 3 * * *``."""
    fields = cron.split()
    require(len(fields) in (5, 6), "--cron", f"expected 5 fields (min hour day month weekday) or 6, got {cron!r}")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def schedule(host: str, package: str | Path, arguments: dict[str, Any], cron: str, name: str,
             experiment: str = DEFAULT_EXPERIMENT, pipeline_root: str | None = None,
             namespace: str | None = None) -> str:
    """Create a recurring run: one at a time (a run never overlaps the previous one, which may still be moving
    the champion), no catch-up of missed slots after a pause. Returns the recurring run id."""
    cron = kfp_cron(cron)
    client = kfp_client(host, namespace)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=1,
        no_catchup=True, params=arguments, pipeline_package_path=str(package), pipeline_root=pipeline_root,
    )
    return recurring.recurring_run_id


def list_schedules(host: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every recurring run: id, name, cron, mode (ENABLE/DISABLE), max concurrency."""
    client = kfp_client(host, namespace)
    rows, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace)
        for run in page.recurring_runs or []:
            cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
            rows.append({"id": run.recurring_run_id, "name": run.display_name, "cron": cron, "mode": run.mode,
                         "max_concurrency": run.max_concurrency, "no_catchup": run.no_catchup})
        token = page.next_page_token
        if not token:
            return rows


def set_schedule_enabled(host: str, recurring_run_id: str, enabled: bool, namespace: str | None = None) -> None:
    client = kfp_client(host, namespace)
    if enabled:
        client.enable_recurring_run(recurring_run_id)
    else:
        client.disable_recurring_run(recurring_run_id)


