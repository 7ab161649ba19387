"""``trainer.train_variant``: what a pipeline train task does, without KFP: one run of a variant trained into the
task's artifact directories, its logs beside the model, checkpoints in the pipeline run's own place (so a retried
task resumes), and the GPU pool given to cluster jobs that name none."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trainer import launch
from trainer.job import overrides_from
from trainer.train_variant import cluster_settings, move_tensorboard, train_variant
from trainer.variants import VariantSpec

TINY = overrides_from(("d_model=16", "n_layer=1", "n_head=1", "max_len=8"),
                      {"max_steps": 4, "batch_size": 8, "eval_every_steps": 2, "checkpoint_every_steps": 2,
                       "log_every_steps": 1})
POOL = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)


@dataclass
class Artifact:
    path: str
    uri: str


def test_a_run_trains_into_the_task_artifacts_and_a_retry_resumes(tiny_data, tmp_path):
    spec = VariantSpec(name="rope", preset="rope", seed=3)
    data = Artifact(str(tiny_data), str(tiny_data))
    root = str(tmp_path / "pipeline-root" / "runs" / "run-1")

    def attempt(n: int) -> dict:
        model = Artifact(str(tmp_path / f"model-{n}"), str(tmp_path / f"model-{n}"))
        return train_variant(spec, TINY, launch.ClusterConfig(), data=data,
                             model=model, tensorboard_dir=str(tmp_path / f"tensorboard-{n}"), run_root=root,
                             run_id="run-1", image="unused", gpus=0)

    first = attempt(1)
    assert first["steps"] == 4 and not first.get("resumed_from")
    run = spec.run_name
    assert run == "rope-seed3"
    assert not (tmp_path / "model-1" / "tensorboard").exists()  # the pushed model carries no logs
    assert any((tmp_path / "tensorboard-1" / run).iterdir())
    assert any((tmp_path / "pipeline-root" / "runs" / "run-1" / "tensorboard" / run).iterdir())
    assert (tmp_path / "pipeline-root" / "runs" / "run-1" / "checkpoints" / run).is_dir()
    # A retried task (another artifact directory, the same run root) picks up the checkpoints.
    second = attempt(2)
    assert second["steps"] == 4 and second["resumed_from"]
    assert (tmp_path / "model-2" / "summary.json").is_file()


def test_cluster_jobs_go_to_the_pipelines_gpu_pool_unless_they_name_their_own():
    selector = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    pooled = cluster_settings({"launcher": "pytorchjob", "nodes": 2}, POOL, selector)
    assert (pooled.tolerations, pooled.node_selector, pooled.nodes) == (POOL, selector, 2)
    own = cluster_settings({"launcher": "pytorchjob", "node_selector": {"pool": "a100"}}, POOL, selector)
    assert own.node_selector == {"pool": "a100"}


def test_move_tensorboard_leaves_the_model_without_logs(tmp_path):
    model, board = tmp_path / "model", tmp_path / "board"
    (model / "tensorboard").mkdir(parents=True)
    (model / "tensorboard" / "events.out.tfevents.1").write_bytes(b"e")
    (model / "model.pt").write_bytes(b"w")
    move_tensorboard(str(model), str(board), "swiglu")
    assert sorted(p.name for p in model.iterdir()) == ["model.pt"]
    assert (board / "swiglu" / "events.out.tfevents.1").read_bytes() == b"e"
    with pytest.raises(FileNotFoundError, match="no TensorBoard logs"):
        move_tensorboard(str(model), str(board), "swiglu")
