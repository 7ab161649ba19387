"""The tasks of a cluster run, called as the KFP executor calls them (the component's function with artifact
objects), with the run's own place on a real S3 server (moto) on 127.0.0.1: a preempted train task's retry
resumes from its checkpoints, and the exit handler's task records how the run ended and what finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from core import storage
from tests.support.data import write_preprocessed

RUN_ID = "5b0e2c4a-run"
# What a train task receives (components/train.py), at a tiny size: a few hundred fast steps with a checkpoint
# every 50, so the kill lands early and the retry has most of the run left to do.
TRAIN = {"variant": {"name": "baseline", "preset": "baseline", "set": {}},
         "model_overrides": ["d_model=16", "n_layer=1", "n_head=2", "max_len=12", "dropout=0.0"],
         "train_config": {"max_steps": 300, "epochs": None, "batch_size": 6, "checkpoint_every_steps": 50,
                          "eval_every_steps": 150, "log_every_steps": 50, "patience": 0},
         "torch_threads": 1, "accelerator": "", "gpus": 0, "cluster": {}, "tolerations": [], "node_selector": {},
         "image": "unused", "warm_start": False, "registry": "unused", "model_name": "interest", "run_id": RUN_ID}
def run_attempt(data: str, out: str, pipeline_root: str) -> None:
    """One attempt of the train task as the KFP executor calls it, with its own local artifact paths (a fresh pod)."""
    from kfp import dsl

    from components.train import train

    train.python_func(data=dsl.Dataset(uri=data), model=dsl.Model(uri=f"{out}/model"),
                      tensorboard=dsl.Artifact(uri=f"{out}/tensorboard"), metrics=dsl.Metrics(uri=f"{out}/metrics"),
                      pipeline_root=pipeline_root, **TRAIN)


def attempt(data, out, pipeline_root) -> subprocess.Popen:
    """``run_attempt`` in its own process, to be killed."""
    code = f"from tests.components.test_cluster_tasks import run_attempt; run_attempt(*{[str(data), str(out), pipeline_root]!r})"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()})


def test_a_preempted_train_task_resumes_from_its_checkpoints_on_retry(s3_bucket, tmp_path, monkeypatch):
    data = write_preprocessed(tmp_path / "data")
    root = f"{s3_bucket}/pipeline-root"
    checkpoints = f"{root}/runs/{RUN_ID}/checkpoints/baseline"

    first = attempt(data, tmp_path / "attempt-1", root)
    deadline = time.monotonic() + 120
    while not any(uri.endswith(".pt.sha256") for uri in storage.list_files(checkpoints)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the node is preempted: no clean-up, its lock stays behind
    first.communicate()
    assert not (tmp_path / "attempt-1" / "model" / "summary.json").exists()
    published = max(int(uri.rsplit("step-", 1)[1][:8]) for uri in storage.list_files(checkpoints)
                    if uri.endswith(".pt.sha256"))

    # KFP's retry: a new pod, the same run and variant (here in this process: one torch import less).
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the task sets it; monkeypatch puts it back
    try:
        run_attempt(str(data), str(tmp_path / "attempt-2"), root)
    finally:
        torch.set_num_threads(threads)
    summary = json.loads((tmp_path / "attempt-2" / "model" / "summary.json").read_text())
    assert summary["resumed_from"] == [published] and 50 <= published < 300 and summary["steps"] == 300
    # Every variant's logs also land in the run's own place, where `interest tensorboard` finds them.
    assert any("/tensorboard/baseline/events.out.tfevents." in uri
               for uri in storage.list_files(f"{root}/runs/{RUN_ID}/tensorboard"))


def test_the_exit_task_records_the_state_and_every_finished_variant(s3_bucket, tmp_path):
    from kfp import dsl

    from components.artifacts import record_finished, run_root
    from components.record_run import record_run
    from tests.support.fake_artifacts import write_run

    root = run_root(f"{s3_bucket}/pipeline-root", RUN_ID)
    for name, hit_rate in (("baseline", 0.2), ("swiglu", 0.3)):
        model_dir, eval_dir = write_run(tmp_path, name, seed=len(name), hit_rate=hit_rate)
        storage.copy_tree(str(tmp_path / name / "eval-test"), f"{s3_bucket}/artifacts/{name}/evaluation/valid")
        storage.copy_tree(str(tmp_path / name / "eval-test"), f"{s3_bucket}/artifacts/{name}/evaluation/test")
        record_finished(root, name, name, None, model_dir, f"{s3_bucket}/artifacts/{name}/evaluation")
    record_finished(root, "rope", "rope", None, str(tmp_path / "gone"),  # never uploaded
                    f"{s3_bucket}/artifacts/rope/evaluation")
    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="interest-pipeline-abc",
                                         pipeline_task_name="exit-handler-1", error_code=9,
                                         error_message="Task train failed after 3 retries")
    summary = dsl.Markdown(uri=str(tmp_path / "summary.md"))
    record_run.python_func(status=status, pipeline_root=f"{s3_bucket}/pipeline-root", run_id=RUN_ID,
                           baseline="baseline", gate_config={"bootstrap_resamples": 200}, summary=summary)

    record = storage.read_json(f"{root}/run.json")
    assert record["state"] == "FAILED" and record["error"]["message"] == "Task train failed after 3 retries"
    assert sorted(record["runs"]) == ["baseline", "swiglu"]  # rope's evaluation never arrived
    swiglu = record["runs"]["swiglu"]
    assert swiglu["test"]["recall@10"] > record["runs"]["baseline"]["test"]["recall@10"] > 0
    page = storage.read_text(f"{root}/run.md")
    assert page == (tmp_path / "summary.md").read_text()
    assert page.startswith(f"# Run {RUN_ID}: FAILED") and "2 run(s) finished" in page
    rows = [line for line in page.splitlines() if line.startswith("| swiglu") or line.startswith("| baseline")]
    assert rows[0].startswith("| swiglu") and "| reference |" in rows[1]  # best first; the baseline is the reference
    change = swiglu["test"]["recall@10"] / record["runs"]["baseline"]["test"]["recall@10"] - 1
    assert f"| {change:+.1%} [" in rows[0]


def test_run_md_compares_replicates_with_the_baseline_variant(s3_bucket, tmp_path):
    """With --seeds every run is NAME-seedN: the baseline is looked up by variant, not by a run's name (run.md once
    showed "-" in every "vs baseline" cell)."""
    from kfp import dsl

    from components.artifacts import record_finished, run_root
    from components.record_run import record_run
    from tests.support.fake_artifacts import write_run

    root = run_root(f"{s3_bucket}/pipeline-root", RUN_ID)
    for variant, seed, hit_rate in (("baseline", 1, 0.2), ("baseline", 2, 0.22), ("swiglu", 1, 0.3),
                                    ("swiglu", 2, 0.31)):
        name = f"{variant}-seed{seed}"
        model_dir, _ = write_run(tmp_path, name, seed=seed * 10 + len(variant), hit_rate=hit_rate)
        for split in ("valid", "test"):
            storage.copy_tree(str(tmp_path / name / "eval-test"), f"{s3_bucket}/artifacts/{name}/evaluation/{split}")
        record_finished(root, name, variant, seed, model_dir, f"{s3_bucket}/artifacts/{name}/evaluation")
    status = dsl.PipelineTaskFinalStatus(state="SUCCEEDED", pipeline_job_resource_name="interest-pipeline-abc",
                                         pipeline_task_name="exit-handler-1", error_code=None, error_message=None)
    record_run.python_func(status=status, pipeline_root=f"{s3_bucket}/pipeline-root", run_id=RUN_ID,
                           baseline="baseline", gate_config={"bootstrap_resamples": 200},
                           summary=dsl.Markdown(uri=str(tmp_path / "summary.md")))

    record = storage.read_json(f"{root}/run.json")
    assert record["runs"]["swiglu-seed2"] == {**record["runs"]["swiglu-seed2"], "variant": "swiglu", "seed": 2}
    page = storage.read_text(f"{root}/run.md")
    swiglu = next(line for line in page.splitlines() if line.startswith("| swiglu |"))
    baseline = next(line for line in page.splitlines() if line.startswith("| baseline |"))
    cells = [c.strip() for c in swiglu.strip("|").split("|")]
    means = {v: sum(record["runs"][f"{v}-seed{s}"]["test"]["recall@10"] for s in (1, 2)) / 2
             for v in ("swiglu", "baseline")}
    assert cells[1] == "1,2" and cells[4].startswith(f"{means['swiglu'] / means['baseline'] - 1:+.1%} [")
    assert "reference" in baseline
