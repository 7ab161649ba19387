"""Users sharded over processes: 2 real gloo processes evaluate exactly what one does (catalogue in item blocks
too), and 2 training ranks each load half of the users while training the same run as one process; validation
on a fixed sample of users, recorded in summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipelines import cli
from tests.support.processes import free_port, interest
from trainer.data import EvalSet, TrainingSet, load_sequences
from trainer.train import train

MANY_ITEMS = 300  # several item blocks of 64 (trainer.metrics.MIN_ITEM_BLOCK)


@pytest.fixture(scope="module")
def data(tmp_path_factory, kit) -> Path:
    return kit.write_preprocessed(tmp_path_factory.mktemp("many-items"), num_users=60, num_items=MANY_ITEMS)


@pytest.fixture(scope="module")
def model(data, tmp_path_factory, kit) -> Path:
    out = tmp_path_factory.mktemp("model")
    train(str(data), str(out), kit.TINY_MODEL, kit.tiny_train(epochs=3))
    return out


def evaluate_cli(model: Path, data: Path, out: Path, *flags: str) -> dict:
    assert cli.main(["evaluate", "--model", str(model), "--data", str(data), "--split", "test", "--output",
                     str(out), *flags]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_and_item_blocks_evaluate_exactly_as_one_process(model, data, tmp_path, capsys):
    one = evaluate_cli(model, data, tmp_path / "one")
    two = evaluate_cli(model, data, tmp_path / "two", "--processes", "2", "--item-block", "64")
    capsys.readouterr()
    assert one.pop("users_per_second") > 0 and two.pop("users_per_second") > 0
    norms = [name for name in one if name.startswith("user_norm_")]  # a batch's shape may round an embedding's
    assert {name: two.pop(name) for name in norms} == pytest.approx({name: one.pop(name) for name in norms}, rel=1e-9)
    assert two == one and one["users"] == 60 and one["items"] == MANY_ITEMS
    per_user = [pq.read_table(tmp_path / name / "per_user.parquet") for name in ("one", "two")]
    assert per_user[1].equals(per_user[0])  # every user's rank and metrics, in the same row order
    assert sorted(per_user[0].column("user_index").to_pylist()) == list(range(60))
    assert 1 < max(per_user[0].column("rank").to_pylist()) <= MANY_ITEMS


def test_the_ranks_of_a_torchrun_job_evaluate_as_one_process(model, data, tmp_path, capsys):
    """What a PyTorchJob starts: `interest evaluate` once per rank with RANK/WORLD_SIZE set (env:// rendezvous);
    rank 0 alone publishes."""
    one = evaluate_cli(model, data, tmp_path / "one")
    capsys.readouterr()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--split", "test", "--output", str(tmp_path / "two"),
            "--item-block", "100"]
    ranks = [interest(argv, {**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    for rank in ranks:
        log, _ = rank.communicate(timeout=120)
        assert rank.returncode == 0, log
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["users"] == one["users"] == 60 and two["recall@10"] == one["recall@10"] and two["mrr"] == one["mrr"]
    per_user = [pq.read_table(tmp_path / name / "per_user.parquet") for name in ("one", "two")]
    assert per_user[1].equals(per_user[0])


def test_bad_scale_flags_are_refused_naming_the_flag(model, data, tmp_path, capsys):
    assert cli.main(["evaluate", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "a"),
                     "--item-block", "10"]) == 2
    assert "--item-block" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "b"),
                     "--processes", "0"]) == 2
    assert "--processes" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _train_rank(rank: int, init: str, data: str, out: str, model_cfg, train_cfg) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        train(data, out, model_cfg, train_cfg)  # joins the group as rank `rank`
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_each_hold_half_the_users_and_train_the_same_run(data, tmp_path, kit):
    """batch_size 6 over 2 ranks: some global batches fall wholly on one rank's users (the other has no rows and
    still joins the all-reduce with zero gradients)."""
    train_cfg = kit.tiny_train(epochs=2, eval_every_steps=5, validation_users=25)
    seqs = load_sequences(str(data))
    examples = TrainingSet(seqs, kit.TINY_MODEL.max_len)
    one_sided = [len(set((seqs.user_index[examples.user[batch]] % 2).tolist())) == 1 for epoch in range(2)
                 for batch in examples.epoch_batches(6, train_cfg.bucket_batches, train_cfg.seed, epoch)]
    assert sum(one_sided) >= 1  # the case is really met
    single = train(str(data), str(tmp_path / "single"), kit.TINY_MODEL, train_cfg)
    mp.spawn(_train_rank, args=(f"file://{tmp_path}/rendezvous", str(data), str(tmp_path / "ddp"), kit.TINY_MODEL,
                                train_cfg), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    (whole,), halves = single["held_per_rank"], ddp["held_per_rank"]
    assert whole["users"] == 60 and [h["users"] for h in halves] == [30, 30]
    assert sum(h["events"] for h in halves) == whole["events"]
    assert sum(h["bytes"] for h in halves) < whole["bytes"] + 2 * 64  # each rank holds its share + a padding row
    assert all(h["bytes"] < 0.65 * whole["bytes"] for h in halves)
    assert ddp["steps"] == single["steps"] == 18 and ddp["tokens"] == single["tokens"]
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["valid_recall@10"] == pytest.approx(b["valid_recall@10"], abs=1 / 25 + 1e-9)
    assert ddp["validation"] == single["validation"] == {"users": 25, "of": 60, "seed": 0}


def test_validation_samples_a_fixed_set_of_users(data):
    seqs = load_sequences(str(data))
    whole = EvalSet.build(seqs, "valid", 12)
    sample = EvalSet.build(seqs, "valid", 12, users=20, seed=3)
    assert len(whole) == whole.eligible == 60 and len(sample) == 20 and sample.eligible == 60
    assert set(sample.user.tolist()) < set(whole.user.tolist()) and sample.user.tolist() == sorted(sample.user.tolist())
    assert torch.equal(EvalSet.build(seqs, "valid", 12, users=20, seed=3).user, sample.user)
    assert not torch.equal(EvalSet.build(seqs, "valid", 12, users=20, seed=4).user, sample.user)
    assert torch.equal(EvalSet.build(seqs, "valid", 12, users=60).user, whole.user)  # the default keeps ML-1M whole
    assert torch.equal(EvalSet.build(seqs, "valid", 12, users=0).user, whole.user)
    sampled_targets = sample.held().targets
    assert torch.equal(sampled_targets, whole.targets[torch.isin(whole.user, sample.user)])
