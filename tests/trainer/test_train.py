"""End-to-end training on tiny data: the artifact directory, TensorBoard, DDP parity, resume after SIGKILL or a
corrupt checkpoint, NaN handling, time budget and a gs:// output."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from core import contract, rundir, storage
from core.configs import ConfigError
from pipelines import cli
from tests.support.processes import free_port, interest
from trainer import checkpoint
from trainer.data import TrainingSet, load_sequences
from trainer.evaluate import evaluate
from trainer.job import TrainJob, job_from_args, torchrun_command
from trainer.model import InterestModel
from trainer.train import NonFiniteLossError, train

# conftest.py's TINY_MODEL and tiny_train() as `interest train` flags.
TINY_FLAGS = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12",
              "--set", "batch_size=6", "--set", "lr=0.003", "--set", "patience=0", "--set", "log_every_steps=5"]


def run(data: Path, out: Path, kit, **overrides) -> dict:
    return train(str(data), str(out), kit.TINY_MODEL, kit.tiny_train(**overrides))


def newest_weights(out: Path) -> dict[str, torch.Tensor]:
    state, _ = checkpoint.load_latest(str(out / "checkpoints"))
    return state["model"]


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory, kit):
    """One complete single-process run, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run")
    return out, run(tiny_data, out, kit)


def test_run_writes_the_model_artifact_directory(finished, tiny_data, kit):
    out, summary = finished
    for name in ("model.pt", "model_config.json", "objective_config.json", "train_config.json", "vocab.json",
                 "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "tensorboard").is_dir() and list((out / "checkpoints").glob("step-*.pt"))
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["steps"] == 14 and summary["stopped"] == "epochs"  # 2 epochs of 7 full batches
    assert summary["tokens_per_second"] > 0 and summary["params"] == InterestModel(kit.TINY_MODEL, 40).num_parameters()
    assert [h["step"] for h in summary["history"]] == [4, 8, 12, 14]  # every 4 steps and at the end
    for point in summary["history"]:
        assert set(point) == {"step", "wall_seconds", "validation_seconds", "train_loss", "penalty", "lr",
                              "valid_recall@10", "valid_ndcg@10", "user_norm_mean"}
        assert point["validation_seconds"] >= 0.0
    best = max(summary["history"], key=lambda h: h["valid_recall@10"])
    assert summary["best"] == {"step": best["step"], "valid_recall@10": best["valid_recall@10"],
                               "valid_ndcg@10": best["valid_ndcg@10"]}
    # The exported weights are the best validation's: `interest evaluate` on the valid split reproduces it.
    metrics = evaluate(str(out), str(tiny_data), split="valid")
    assert metrics["recall@10"] == pytest.approx(summary["best"]["valid_recall@10"])
    assert metrics["ndcg@10"] == pytest.approx(summary["best"]["valid_ndcg@10"])


def test_training_learns_the_walk(finished):
    """The tiny users step +1 through the catalogue: recall climbs well above chance (10 of 40 items)."""
    _, summary = finished
    recalls = [h["valid_recall@10"] for h in summary["history"]]
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < losses[0]
    assert summary["best"]["valid_recall@10"] > 0.35 and recalls[-1] > recalls[0]


def test_interest_evaluate_writes_metrics_and_per_user_rows(finished, tiny_data, tmp_path, capsys):
    out, _ = finished
    assert cli.main(["evaluate", "--model", str(out), "--data", str(tiny_data), "--split", "test",
                     "--output", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"recall@1", "recall@5", "recall@10", "recall@20", "recall@50", "ndcg@10", "mrr",
                            "coverage@10", "users", "params", "users_per_second", "split", "protocol", "items", "measured",
                            *(f"{kind}_norm_{s}" for kind in ("user", "item") for s in ("mean", "std", "p50", "p95",
                                                                                          "max"))}
    assert metrics["split"] == "test" and metrics["users"] == 48
    assert metrics["protocol"] == "ours" and metrics["items"] == 40
    per_user = pq.read_table(tmp_path / "per_user.parquet").to_pydict()
    assert {"user_index", "rank", "recall@10", "ndcg@10", "rr"} <= set(per_user)
    assert len(per_user["rank"]) == 48 and min(per_user["rank"]) >= 1
    assert sum(per_user["recall@10"]) / 48 == pytest.approx(metrics["recall@10"])
    assert json.loads(capsys.readouterr().out)["recall@10"] == metrics["recall@10"]


def test_interest_evaluate_reads_the_champion_of_a_registry_reference(finished, tiny_data, tmp_path, capsys):
    """`--model registry:ROOT` (docs/contracts.md) evaluates the champion's version directory."""
    from release.gate import GateConfig, decide
    from release.records import Run
    from release.registry import Policy, push

    out, _ = finished
    assert cli.main(["evaluate", "--model", str(out), "--data", str(tiny_data), "--output", str(tmp_path / "own")]) == 0
    blessing = decide([Run.load(name="baseline", model_dir=str(out), test_dir=str(tmp_path / "own"))], None, None,
                      GateConfig(min_recall_at_10=0.0))
    policy = Policy(GateConfig(min_recall_at_10=0.0))
    assert push(blessing, str(tmp_path / "registry"), version="v1", policy=policy).outcome == "pushed"
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", f"registry:{tmp_path / 'registry'}#interest", "--data", str(tiny_data),
                     "--output", str(tmp_path / "champion")]) == 0
    ours, champion = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("own", "champion"))
    assert champion["recall@10"] == ours["recall@10"] and champion["users"] == ours["users"] == 48

def test_tensorboard_events_hold_every_tag(finished):
    out, summary = finished
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {f"train/{t}" for t in ("loss", "penalty", "lr", "grad_norm", "tokens_per_second")}
    expected |= {f"valid/{t}" for t in ("recall@10", "ndcg@10")}
    expected |= {f"valid_by_seconds/{t}" for t in ("recall@10", "ndcg@10")}
    expected |= {f"norms/{k}_norm_{s}" for k in ("user", "item") for s in ("mean", "p95", "max")}
    assert expected <= scalars
    recall = events.Scalars("valid/recall@10")
    assert [e.step for e in recall] == [h["step"] for h in summary["history"]]
    assert [e.value for e in recall] == pytest.approx([h["valid_recall@10"] for h in summary["history"]])
    assert [e.step for e in events.Scalars("train/lr")] == [2, 4, 6, 8, 10, 12, 14]
    assert events.Scalars("hparam/valid_recall@10")[0].value == pytest.approx(summary["best"]["valid_recall@10"])
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["preset"].string_value == "baseline"
    assert start.hparams["lr"].number_value == pytest.approx(3e-3)
    assert start.hparams["d_model"].number_value == 16


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_data, tmp_path):
    """A real 2-rank DDP job (gloo, env:// rendezvous, the ranks torchrun would start) against one process."""
    flags = ["train", "--data", str(tiny_data), *TINY_FLAGS, "--set", "dropout=0.0", "--set", "eval_every_steps=7",
             "--epochs", "2"]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    ranks = [interest([*flags, "--output", str(tmp_path / "ddp")], {**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(2)]
    assert cli.main([*flags, "--output", str(tmp_path / "single")]) == 0
    for rank in ranks:
        log, _ = rank.communicate(timeout=120)
        assert rank.returncode == 0, log
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["steps"] == single["steps"] == 14 and ddp["tokens"] == single["tokens"]
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["valid_recall@10"] == pytest.approx(b["valid_recall@10"], abs=1 / 48 + 1e-9)
    assert_same_weights(newest_weights(tmp_path / "ddp"), newest_weights(tmp_path / "single"), atol=1e-4)


def test_sigkill_mid_training_then_rerun_ends_with_the_uninterrupted_weights(tiny_data, tmp_path):
    """Dropout on, so the restored RNG states matter; the kill lands mid-epoch (7 steps per epoch)."""
    flags = ["train", "--data", str(tiny_data), *TINY_FLAGS, "--set", "dropout=0.1", "--set", "eval_every_steps=10",
             "--set", "checkpoint_every_steps=5", "--epochs", "20"]
    out = tmp_path / "killed"
    victim = interest([*flags, "--output", str(out)])
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-00000010.pt.sha256").exists():
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()[0]
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL and not (out / "summary.json").exists()

    rerun = interest([*flags, "--output", str(out)])
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert "resuming from" in log
    assert cli.main([*flags, "--output", str(tmp_path / "uninterrupted")]) == 0

    resumed = json.loads((out / "summary.json").read_text())
    reference = json.loads((tmp_path / "uninterrupted" / "summary.json").read_text())
    assert len(resumed["resumed_from"]) == 1 and 10 <= resumed["resumed_from"][0] < 140
    assert resumed["steps"] == reference["steps"] == 140
    assert_same_weights(newest_weights(out), newest_weights(tmp_path / "uninterrupted"))
    assert_same_weights(read_weights(out / "model.pt"), read_weights(tmp_path / "uninterrupted" / "model.pt"))
    assert resumed["best"] == reference["best"]


def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(tiny_data, tmp_path, kit, caplog):
    out = tmp_path / "run"
    run(tiny_data, out, kit, epochs=None, max_steps=8, checkpoint_every_steps=4, keep_checkpoints=2)
    final = newest_weights(out)
    latest = out / "checkpoints" / "step-00000008.pt"
    data = bytearray(latest.read_bytes())
    data[-100] ^= 0xFF
    latest.write_bytes(bytes(data))
    summary = run(tiny_data, out, kit, epochs=None, max_steps=8, checkpoint_every_steps=4, keep_checkpoints=2)
    assert "checkpoint of step 8" in caplog.text and "does not match" in caplog.text
    assert summary["resumed_from"] == [4] and summary["steps"] == 8
    assert_same_weights(newest_weights(out), final)  # steps 5..8 redone exactly


def test_resume_continues_the_random_streams_exactly(tiny_data, tmp_path, kit):
    """With dropout on, a run resumed from the step-4 checkpoint of an 8-step run ends with that run's exact
    weights only if the checkpoint's RNG states are restored (the fresh run seeds its dropout stream anew)."""
    model_cfg = dataclasses.replace(kit.TINY_MODEL, dropout=0.3)
    cfg = kit.tiny_train(epochs=None, max_steps=8, checkpoint_every_steps=4, keep_checkpoints=3)
    train(str(tiny_data), str(tmp_path / "uninterrupted"), model_cfg, cfg)
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    for name in ("step-00000004.pt", "step-00000004.pt.sha256", "best-model.pt"):
        shutil.copy(tmp_path / "uninterrupted" / "checkpoints" / name, tmp_path / "resumed" / "checkpoints" / name)
    summary = train(str(tiny_data), str(tmp_path / "resumed"), model_cfg, cfg)
    assert summary["resumed_from"] == [4] and summary["steps"] == 8
    assert_same_weights(newest_weights(tmp_path / "resumed"), newest_weights(tmp_path / "uninterrupted"))

def published_files(out: Path) -> dict[str, str]:
    """sha256 of every file a complete export's marker lists (verified), and of the marker itself."""
    complete = rundir.open_complete(str(out), contract.MODEL_KIND)
    return {**{name: entry["sha256"] for name, entry in complete.files.items()},
            "_SUCCESS.json": hashlib.sha256((out / "_SUCCESS.json").read_bytes()).hexdigest()}


def test_sigkill_mid_export_keeps_the_previous_export_and_a_rerun_completes(tiny_data, tmp_path):
    """A real `interest train` is stopped where the export has staged model.pt but not published: the export asks
    `git` for the code version (lineage.json) after writing the weights, and the `git` this test puts first on
    PATH tells the test it was reached and then hangs, so the SIGKILL always lands between staging and publish."""
    out = tmp_path / "model"
    flags = ["train", "--data", str(tiny_data), "--output", str(out), *TINY_FLAGS]
    assert cli.main([*flags, "--max-steps", "4"]) == 0
    before = published_files(out)
    reached = tmp_path / "git-reached"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "git").write_text(f"#!/bin/sh\necho $$ > {reached}.tmp && mv {reached}.tmp {reached}\n"
                                          "exec sleep 60\n")
    (tmp_path / "bin" / "git").chmod(0o755)
    victim = interest([*flags, "--max-steps", "6", "--restart"],
                      {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    deadline = time.monotonic() + 120
    while not reached.exists():
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()[0]
        time.sleep(0.005)
    (staging,) = tmp_path.glob(".model.staging-*")
    assert (staging / "model.pt").is_file() and not (staging / "_SUCCESS.json").exists()
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    os.kill(int(reached.read_text()), signal.SIGKILL)  # the stand-in git, orphaned
    assert victim.returncode == -signal.SIGKILL
    assert published_files(out) == before
    assert json.loads((out / "summary.json").read_text())["steps"] == 4

    assert cli.main([*flags, "--max-steps", "6"]) == 0  # resumes the killed run's last checkpoint, exports it
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["resumed_from"]) == (6, [6])
    assert published_files(out).keys() == before.keys() and not list(tmp_path.glob(".model.staging-*"))

def test_resuming_on_other_data_is_refused_and_restart_starts_over(tiny_data, tmp_path, kit, capsys):
    """The same number of items, other items: the checkpoint would load, and silently mean other things."""
    other = kit.write_preprocessed(tmp_path / "other-data", item_prefix="j")
    out = tmp_path / "model"
    flags = ["train", "--output", str(out), *TINY_FLAGS, "--max-steps", "2"]
    assert cli.main([*flags, "--data", str(tiny_data)]) == 0
    capsys.readouterr()
    assert cli.main([*flags, "--data", str(other)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"interest train: error: --data: the checkpoints in {out / 'checkpoints'} were trained on "
                           "other data") and "--restart to start over" in line
    assert json.loads((out / "lineage.json").read_text())["data"]["dir"] == str(tiny_data)
    assert cli.main([*flags, "--data", str(other), "--restart"]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == []
    assert json.loads((out / "lineage.json").read_text())["data"]["dir"] == str(other)
    assert json.loads((out / "vocab.json").read_text())["items"][0] == "j1"

def test_rerun_with_a_different_config_is_refused(tiny_data, tmp_path, kit):
    out = tmp_path / "run"
    run(tiny_data, out, kit, epochs=None, max_steps=4)
    with pytest.raises(ConfigError, match=r"holds a run with train lr=0.003, now 0.01"):
        run(tiny_data, out, kit, epochs=None, max_steps=4, lr=0.01)
    # How long it runs and how often it logs may change: the weights a step computes do not.
    again = run(tiny_data, out, kit, epochs=None, max_steps=4, time_budget_seconds=600, log_every_steps=1)
    assert again["resumed_from"] == [4]


def first_step_with(user: int, data: TrainingSet, batch_size: int, seed: int, epochs: int) -> list[int]:
    """1-based steps whose global batch holds ``user``'s training example."""
    example = int(torch.nonzero(torch.nonzero(data.seqs.train_end >= 2).flatten() == user))
    steps = []
    for epoch in range(epochs):
        for i, batch in enumerate(data.epoch_batches(batch_size, 50, seed, epoch)):
            if example in batch.tolist():
                steps.append(epoch * data.steps_per_epoch(batch_size) + i + 1)
    return steps


@pytest.fixture(scope="module")
def nan_data(tiny_data, tmp_path_factory, kit):
    """The tiny data with one user's timestamps NaN; that user first trains at step >= 4."""
    data = TrainingSet(load_sequences(str(tiny_data)), kit.TINY_MODEL.max_len)
    cfg = kit.tiny_train()
    for user in range(kit.NUM_USERS):
        steps = first_step_with(user, data, cfg.batch_size, cfg.seed, cfg.epochs) if data.seqs.train_end[user] >= 2 \
            else []
        if steps and steps[0] >= 4:
            return kit.write_preprocessed(tmp_path_factory.mktemp("nan-data"), nan_user=user), steps
    raise AssertionError("no user trains late enough")


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(nan_data, tmp_path, kit):
    directory, steps = nan_data
    last_good = (steps[0] - 1) // 2 * 2
    with pytest.raises(NonFiniteLossError) as error:
        run(directory, tmp_path, kit, checkpoint_every_steps=2)
    message = str(error.value)
    assert f"loss is nan at step {steps[0]} " in message
    assert f"step-{last_good:08d}.pt (step {last_good})" in message and "nan_policy=skip" in message
    assert checkpoint.load_latest(str(tmp_path / "checkpoints"))[0]["step"] == last_good


def test_nan_loss_steps_are_skipped_when_configured(nan_data, tmp_path, kit):
    directory, steps = nan_data
    summary = run(directory, tmp_path, kit, nan_policy="skip")
    assert summary["skipped_steps"] == len(steps) and summary["steps"] == 14
    assert all(torch.isfinite(w).all() for w in newest_weights(tmp_path).values())
    with pytest.raises(NonFiniteLossError, match="max_skipped_steps"):
        run(directory, tmp_path / "strict", kit, nan_policy="skip", max_skipped_steps=0)


def test_time_budget_stops_early_and_still_validates(tiny_data, tmp_path, kit):
    summary = run(tiny_data, tmp_path, kit, epochs=100_000, time_budget_seconds=1.0)
    assert summary["stopped"] == "time_budget" and 0 < summary["steps"] < summary["total_steps"]
    assert summary["train_seconds"] >= 1.0 and summary["history"][-1]["step"] == summary["steps"]


def test_a_time_budgeted_cosine_run_ends_at_its_lr_floor(tiny_data, tmp_path, kit):
    """The schedule spans the budget, not the 700,000 steps of the epoch limit: the last step runs at the floor.
    (No validation or checkpoint inside the budget: on a loaded machine one of those can outlast the few
    milliseconds the last steps take, and the test is about the schedule, not about them.)"""
    # The epoch limit is far out of reach (a fast CI machine did 939 steps in the 2 s), so only the budget can end it.
    summary = run(tiny_data, tmp_path, kit, epochs=100_000, time_budget_seconds=2.0, schedule="cosine",
                  min_lr_ratio=0.01, eval_every_steps=100_000, checkpoint_every_steps=100_000)
    floor = 0.01 * 3e-3
    assert summary["stopped"] == "time_budget" and summary["steps"] < summary["total_steps"] // 100
    assert floor <= summary["final_lr"] < 1.05 * floor, summary["stop_note"]
    assert "time budget" in summary["stop_note"] and "100% of it done" in summary["stop_note"]


def test_early_stopping_says_it_cut_a_decaying_schedule_short(tiny_data, tmp_path, kit):
    """lr so small that Recall@10 never improves: patience 1 stops at the second validation, high on the cosine."""
    summary = run(tiny_data, tmp_path, kit, lr=1e-9, schedule="cosine", patience=1, eval_every_steps=2)
    assert summary["stopped"] == "early_stopping" and summary["steps"] == 4
    assert summary["final_lr"] > 0.5 * 1e-9
    assert "the decaying schedule was cut short" in summary["stop_note"]


def test_train_to_gcs_and_resume_from_there(tiny_data, gcs_bucket, kit):
    out = f"{gcs_bucket}/runs/tiny"
    summary = run(tiny_data, out, kit, epochs=None, max_steps=4)
    files = {f[len(out) + 1:] for f in storage.list_files(out)}
    assert {"checkpoints/step-00000004.pt", "checkpoints/step-00000004.pt.sha256"} <= files
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
    # The export is published under a run prefix, named by the marker written last (core.rundir).
    model = rundir.open_complete(out, contract.MODEL_KIND)
    assert {"model.pt", "model_config.json", "objective_config.json", "train_config.json", "vocab.json",
            "summary.json", "lineage.json"} == set(model.files)
    assert storage.read_json(model.path("summary.json")) == summary
    again = run(tiny_data, out, kit, epochs=None, max_steps=4)
    assert again["resumed_from"] == [4] and again["steps"] == 4
    assert evaluate(out, str(tiny_data), split="valid")["recall@10"] == pytest.approx(summary["best"]["valid_recall@10"])


def test_cli_rejects_bad_flags_before_training(tiny_data, tmp_path, capsys):
    assert cli.main(["train", "--data", str(tiny_data), "--output", str(tmp_path), "--set", "warmup=0.1"]) == 2
    assert "--set warmup: not a ModelConfig, ObjectiveConfig or TrainConfig field" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tiny_data), "--output", str(tmp_path), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_nproc_launches_torchrun_with_the_same_arguments(tiny_data, tmp_path):
    """`--nproc` re-runs the same command under torchrun; rendezvous flags after -- make it multi-node."""
    argv = ["train", "--data", str(tiny_data), "--output", str(tmp_path), "--preset", "swiglu", "--set", "lr=0.01",
            "--set", "model.d_model=32", "--max-steps", "9", "--time-budget", "60", "--nproc", "4"]
    args = cli.build_parser().parse_args(argv)
    job = job_from_args(args)
    worker = cli.build_parser().parse_args(["train", *job.argv()])
    assert job_from_args(worker).configs() == job.configs()
    assert worker.nproc == 1
    small = TrainJob(data="D", output="O")
    single_node = torchrun_command(small, 4)
    assert single_node[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4",
                               "-m", "trainer", *small.argv()]
    rendezvous = ["--nnodes", "2", "--node-rank", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "head:29400"]
    multi_node = torchrun_command(small, 8, rendezvous)
    assert "--standalone" not in multi_node and multi_node[3:3 + len(rendezvous)] == rendezvous
