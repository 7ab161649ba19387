"""Submit the compiled pipeline to Vertex AI Pipelines (google-cloud-aiplatform, the gcp extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.configs import ConfigError, require


def submit_vertex(package: str | Path, arguments: dict[str, Any], project: str, region: str, pipeline_root: str,
                  display_name: str = "interest-pipeline", enable_caching: bool | None = None,
                  service_account: str | None = None) -> str:
    """Submit the compiled pipeline as a Vertex AI PipelineJob; returns its resource name."""
    try:
        from google.cloud import aiplatform
    except ImportError as exc:
        raise ConfigError("--vertex needs google-cloud-aiplatform: pip install 'interest-pipeline[gcp]'") from exc
    require(pipeline_root.startswith("gs://"), "--pipeline-root", f"Vertex needs a gs:// pipeline root, got {pipeline_root!r}")
    job = aiplatform.PipelineJob(
        display_name=display_name, template_path=str(package), pipeline_root=pipeline_root,
        parameter_values=arguments, enable_caching=enable_caching, project=project, location=region,
    )
    job.submit(service_account=service_account)
    return job.resource_name

