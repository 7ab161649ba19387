"""Submit and schedule the compiled pipeline on Vertex AI Pipelines (google-cloud-aiplatform, the gcp extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.configs import ConfigError, require


@dataclass(frozen=True)
class VertexTarget:
    """Where a Vertex AI PipelineJob runs and as whom."""

    project: str
    region: str
    pipeline_root: str  # gs://bucket/prefix: Vertex AI keeps every artifact there
    service_account: str | None = None  # the jobs run as this service account; None: the Compute default

    def __post_init__(self) -> None:
        require(bool(self.project), "--project", "is required with --vertex")
        require(bool(self.region), "--region", "is required with --vertex")
        require(self.pipeline_root.startswith("gs://") and len(self.pipeline_root) > len("gs://"), "--pipeline-root",
                f"Vertex needs a gs:// pipeline root, got {self.pipeline_root!r}")


def _aiplatform():
    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError("--vertex needs google-cloud-aiplatform: pip install 'interest-pipeline[gcp]'") from exc
    return aiplatform


def _job(target: VertexTarget, package: str | Path, arguments: dict[str, Any], display_name: str,
         enable_caching: bool | None = None):
    return _aiplatform().PipelineJob(
        display_name=display_name, template_path=str(package), pipeline_root=target.pipeline_root,
        parameter_values=arguments, enable_caching=enable_caching, project=target.project, location=target.region,
    )


def submit_vertex(target: VertexTarget, package: str | Path, arguments: dict[str, Any],
                  display_name: str = "interest-pipeline", enable_caching: bool | None = None) -> str:
    """Submit the compiled pipeline as a Vertex AI PipelineJob; returns its resource name."""
    job = _job(target, package, arguments, display_name, enable_caching)
    job.submit(service_account=target.service_account)
    return job.resource_name


def check_cron(cron: str) -> str:
    """Vertex AI schedules take standard 5-field cron, optionally after ``TZ=Area/City``."""
    fields = cron.split()
    if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):
        fields = fields[1:]
    require(len(fields) == 5, "--cron", f"Vertex AI takes 5-field cron (min hour day month weekday), got {cron!r}")
    return cron


def schedule_vertex(target: VertexTarget, package: str | Path, arguments: dict[str, Any], cron: str,
                    name: str) -> tuple[str, tuple[str, ...]]:
    """Create the Vertex AI PipelineJobSchedule ``name`` (standard 5-field cron, UTC unless it starts with
    ``TZ=...``), one run at a time; a schedule of the same name is replaced (created first, then the old ones
    deleted), which is how it moves to newly compiled code. Returns (resource name, replaced resource names)."""
    check_cron(cron)
    aiplatform = _aiplatform()
    previous = aiplatform.PipelineJobSchedule.list(filter=f'display_name="{name}"', project=target.project,
                                                   location=target.region)
    schedule = _job(target, package, arguments, name).create_schedule(
        display_name=name, cron=cron, max_concurrent_run_count=1, service_account=target.service_account)
    for old in previous:
        old.delete()
    return schedule.resource_name, tuple(old.resource_name for old in previous)
