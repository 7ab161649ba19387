"""`interest submit|schedule --vertex` and the Vertex launchers with the real google-cloud-aiplatform 1.165.1.

Vertex AI cannot run here, so the SDK runs for real up to its network edge: it loads the compiled file, builds the
PipelineJob, the PipelineJobSchedule and the CustomJob's worker pools as its own protobuf messages (which refuse
unknown fields and wrong types), with anonymous credentials; only the calls that leave the machine are replaced
by recorders: the Vertex service clients' RPC methods and the SDK's check of the pipeline root's bucket.
"""

from __future__ import annotations

import sys

import pytest
import yaml

from pipelines.cli import main
from pipelines.compiler import compile_pipeline

IMAGE = "registry.example.com/team/interest-pipeline:3f2a9c1d0e4b"
DATA = "gs://models-bucket/events/ml-100k.parquet"
SERVICE_ACCOUNT = "runner@p.iam.gserviceaccount.com"


class VertexApi:
    """What reached the Vertex service clients: (method, request fields) in order."""

    def __init__(self, schedules: tuple[str, ...] = ()):
        self.calls: list[tuple[str, dict]] = []
        self.schedules = list(schedules)


@pytest.fixture
def vertex_api(monkeypatch):
    """Anonymous credentials and recording RPC methods on the SDK's own Vertex service clients."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient
    from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient
    from google.cloud.aiplatform_v1.types import ListSchedulesResponse, PipelineJob, Schedule

    api = VertexApi(schedules=("projects/p/locations/us-central1/schedules/old",))
    monkeypatch.setattr(google.auth, "default", lambda *args, **kwargs: (AnonymousCredentials(), "p"))
    from google.cloud.aiplatform.utils import gcs_utils

    monkeypatch.setattr(gcs_utils, "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist",
                        lambda output_artifacts_gcs_dir, **kwargs: api.calls.append(
                            ("check_bucket", {"uri": output_artifacts_gcs_dir})))

    def create_pipeline_job(self, request=None, *, parent=None, pipeline_job=None, pipeline_job_id=None, **kwargs):
        api.calls.append(("create_pipeline_job", {"parent": parent, "pipeline_job": pipeline_job}))
        created = PipelineJob(pipeline_job)
        created.name = f"{parent}/pipelineJobs/{pipeline_job_id}"
        return created

    def create_schedule(self, request=None, *, parent=None, schedule=None, **kwargs):
        api.calls.append(("create_schedule", {"parent": parent, "schedule": schedule}))
        created = Schedule(schedule)
        created.name = f"{parent}/schedules/new"
        return created

    def list_schedules(self, request=None, **kwargs):
        api.calls.append(("list_schedules", {"filter": request["filter"] if request else None}))
        return [Schedule(name=name) for name in api.schedules] if api.schedules else ListSchedulesResponse()

    def delete_schedule(self, request=None, *, name=None, **kwargs):
        api.calls.append(("delete_schedule", {"name": name}))
        api.schedules.remove(name)

        class Done:  # the long-running operation the SDK waits on
            operation = Schedule(name=f"{name}/operations/1")

            def result(self, timeout=None):
                return None

        return Done()

    monkeypatch.setattr(PipelineServiceClient, "create_pipeline_job", create_pipeline_job)
    monkeypatch.setattr(ScheduleServiceClient, "create_schedule", create_schedule)
    monkeypatch.setattr(ScheduleServiceClient, "list_schedules", list_schedules)
    monkeypatch.setattr(ScheduleServiceClient, "delete_schedule", delete_schedule)
    return api


@pytest.fixture
def vertex_flags():
    return ["--vertex", "--project", "p", "--region", "us-central1", "--pipeline-root", "gs://acme-ml/root",
            "--service-account", SERVICE_ACCOUNT, "--registry", "gs://models-bucket/registry", "--dataset", DATA,
            "--image", IMAGE, "--profile", "smoke"]


def test_the_sdk_loads_only_the_single_document_vertex_flavour(tmp_path):
    """The Kubeflow flavour carries the kfp-kubernetes platform spec as a second YAML document, which the SDK
    refuses; the Vertex flavour is one document and loads."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    arguments = {"registry": "gs://b/registry", "pipeline_root": "gs://b/root", "accelerator_count": "1"}
    common = {"project": "p", "location": "us-central1", "credentials": AnonymousCredentials(),
              "pipeline_root": "gs://b/root", "parameter_values": arguments}
    kubeflow = compile_pipeline(tmp_path / "kubeflow.yaml", image=IMAGE, target="kubeflow")
    with pytest.raises(yaml.composer.ComposerError, match="single document"):
        aiplatform.PipelineJob(display_name="x", template_path=str(kubeflow), **common)
    vertex = compile_pipeline(tmp_path / "vertex.yaml", image=IMAGE, target="vertex")
    job = aiplatform.PipelineJob(display_name="x", template_path=str(vertex), **common)
    values = job._gca_resource.runtime_config.parameter_values
    assert values["accelerator_count"] == "1" and values["pipeline_root"] == "gs://b/root"
    schedule = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name="nightly", project="p",
                                              location="us-central1", credentials=AnonymousCredentials())
    assert schedule._gca_resource.create_pipeline_job_request.pipeline_job.runtime_config.gcs_output_directory == (
        "gs://b/root")


def test_vertex_submit_sends_one_pipeline_job(vertex_api, vertex_flags, capsys):
    assert main(["submit", *vertex_flags]) == 0
    assert [method for method, _ in vertex_api.calls] == ["check_bucket", "create_pipeline_job"]
    method, request = vertex_api.calls[1]
    job = request["pipeline_job"]
    assert (method, request["parent"]) == ("create_pipeline_job", "projects/p/locations/us-central1")
    assert job.service_account == SERVICE_ACCOUNT
    root = vertex_flags[vertex_flags.index("--pipeline-root") + 1]
    assert job.runtime_config.gcs_output_directory == root
    values = job.runtime_config.parameter_values
    assert values["pipeline_root"] == root and values["dataset"] == DATA  # the tasks' run root: the same
    assert [variant["name"] for variant in values["variants"]] == ["baseline", "swiglu"]
    assert "kubernetes" not in str(job.pipeline_spec)  # the Vertex flavour: no platform spec
    assert "submitted Vertex AI PipelineJob projects/p/locations/us-central1/pipelineJobs/" in capsys.readouterr().out


def test_vertex_schedule_replaces_the_old_one_after_creating_the_new(vertex_api, vertex_flags, capsys):
    assert main(["schedule", *vertex_flags, "--cron", "0 3 * * *", "--name", "interest-nightly"]) == 0
    assert [method for method, _ in vertex_api.calls] == ["list_schedules", "create_schedule", "delete_schedule"]
    assert vertex_api.calls[0][1]["filter"] == 'display_name="interest-nightly"'
    schedule = vertex_api.calls[1][1]["schedule"]
    assert (schedule.display_name, schedule.cron, schedule.max_concurrent_run_count) == (
        "interest-nightly", "0 3 * * *", 1)
    assert schedule.create_pipeline_job_request.pipeline_job.service_account == SERVICE_ACCOUNT
    assert vertex_api.calls[2][1]["name"] == "projects/p/locations/us-central1/schedules/old"
    assert "replaced projects/p/locations/us-central1/schedules/old" in capsys.readouterr().out
    vertex_api.calls.clear()
    assert main(["schedule", *vertex_flags, "--cron", "0 0 3 * * *"]) == 2  # Vertex takes 5-field cron
    assert "--cron: Vertex AI takes 5-field cron" in capsys.readouterr().err and vertex_api.calls == []


def test_vertex_without_the_gcp_extra_is_a_clear_error(capsys, monkeypatch, vertex_flags):
    import google.cloud

    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", None)  # as in an install without the gcp extra
    monkeypatch.delattr(google.cloud, "aiplatform", raising=False)
    assert main(["submit", *vertex_flags]) == 2
    assert "pip install 'interest-pipeline[gcp]'" in capsys.readouterr().err


def test_custom_job_worker_pools_are_the_sdks_own_messages():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform_v1.types import WorkerPoolSpec

    from trainer.job import TrainJob
    from trainer.launch import ClusterConfig, ClusterJob, render_vertex_worker_pools

    cluster = ClusterConfig(launcher="vertex", nodes=3, accelerator_type="NVIDIA_L4", gpus_per_node=4,
                            staging_bucket="gs://staging")
    job = ClusterJob("interest-rope-run1", IMAGE, TrainJob(data="gs://b/data", output="gs://b/model", preset="rope"))
    pools = [WorkerPoolSpec(pool) for pool in render_vertex_worker_pools(job, cluster)]  # unknown fields raise
    assert [pool.replica_count for pool in pools] == [1, 2]
    assert pools[0].machine_spec.machine_type == "g2-standard-48" and pools[0].machine_spec.accelerator_count == 4
    assert pools[0].container_spec.image_uri == IMAGE and pools[0].container_spec.command == ["sh", "-c"]
    custom = aiplatform.CustomJob(display_name=job.name, worker_pool_specs=render_vertex_worker_pools(job, cluster),
                                  base_output_dir="gs://b/model", staging_bucket="gs://staging", project="p",
                                  location="us-central1", credentials=AnonymousCredentials())
    assert list(custom._gca_resource.job_spec.worker_pool_specs) == pools
    assert custom._gca_resource.job_spec.base_output_directory.output_uri_prefix == "gs://b/model"
