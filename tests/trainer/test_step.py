"""The one training step under DDP: the norm penalty is the GLOBAL batch's (2 gloo processes against one)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from tests.support import model_kit as mk
from trainer.data import TrainBatch
from trainer.distributed import Distributed
from trainer.losses import embedding_penalty
from trainer.model import InterestModel
from trainer.objective import ObjectiveConfig
from trainer.step import StepContext, train_step

LENGTHS = [7, 2, 6, 3, 7, 5]  # rank r takes rows r::2: the two ranks' user norms differ


def hinge_cfg(tau: float) -> ObjectiveConfig:
    return ObjectiveConfig(penalty="hinge", penalty_lambda=0.5, penalty_tau=tau)


def global_batch():
    batch = mk.make_batch(LENGTHS, T=7)
    return batch, mk.next_item_targets(batch["items"])


def make_model() -> InterestModel:
    """A fresh model whose user head's scale is already trained away from 1, so user norms differ by user."""
    torch.manual_seed(0)
    model = InterestModel(mk.tiny(), mk.NUM_ITEMS)
    torch.nn.init.normal_(model.user_head.log_scale.weight, std=0.5)
    return model


def one_step(cfg: ObjectiveConfig, rank: int, world_size: int,
             ddp: Distributed) -> tuple[float, dict[str, torch.Tensor]]:
    """One train_step on this rank's rows of the global batch; the penalty and the updated weights."""
    model = make_model()
    forward = DistributedDataParallel(model) if world_size > 1 else model
    batch, targets = global_batch()
    mine = {k: v[rank::world_size] for k, v in batch.items()}
    step = TrainBatch(mine, targets[rank::world_size], int((targets[rank::world_size] > 0).sum()),
                      int((targets > 0).sum()), len(LENGTHS))
    context = StepContext(model, forward, torch.optim.SGD(model.parameters(), lr=1.0), cfg, 0.0, ddp, False)
    result = train_step(context, step)
    return result.penalty, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(rank: int, init: str, tau: float, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.save(one_step(hinge_cfg(tau), rank, 2, Distributed(rank, 2, torch.device("cpu"), False)),
                   f"{out}/rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other still sends
    finally:
        dist.destroy_process_group()


def test_two_processes_apply_the_global_hinge(tmp_path):
    """tau is the lower of the two ranks' mean user norms: averaging per-rank hinges would give twice the global
    hinge, and a gradient from one rank's users only."""
    model = make_model().eval()
    batch, _ = global_batch()
    with torch.no_grad():
        norms = model.user_embedding(batch).norm(dim=-1)
        rank_means = [float(norms[r::2].mean()) for r in range(2)]
        tau = min(rank_means)
        cfg = hinge_cfg(tau)
        expected = embedding_penalty(model.user_embedding(batch), cfg).item()
    per_rank_mean = sum(0.5 * (max(m - tau, 0.0) ** 2) for m in rank_means) / 2
    assert expected > 1e-3 and abs(expected - per_rank_mean) > 0.5 * expected  # the test can tell them apart

    single_penalty, single_weights = one_step(cfg, 0, 1, Distributed(0, 1, torch.device("cpu"), False))
    mp.spawn(_rank, args=(f"file://{tmp_path}/rendezvous", tau, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        penalty, weights = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert abs(penalty - expected) < 1e-4 * expected
        assert abs(single_penalty - expected) < 1e-4 * expected
        for key, value in single_weights.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-4)


def _lopsided_rank(rank: int, init: str, out: str) -> None:
    """Rank 0 holds every row of the global batch, rank 1 none (each rank holds its own users)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        cfg = hinge_cfg(0.0)
        model = make_model()
        batch, targets = global_batch()
        rows = slice(None) if rank == 0 else slice(0, 0)
        step = TrainBatch({k: v[rows] for k, v in batch.items()}, targets[rows], int((targets[rows] > 0).sum()),
                          int((targets > 0).sum()), len(LENGTHS))
        context = StepContext(model, DistributedDataParallel(model), torch.optim.SGD(model.parameters(), lr=1.0),
                              cfg, 0.0, Distributed(rank, 2, torch.device("cpu"), False), False)
        result = train_step(context, step)
        torch.save((result.penalty, result.non_finite is None, {k: v.detach().clone() for k, v in
                                                                 model.state_dict().items()}), f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_rank_without_rows_joins_the_step_and_changes_nothing(tmp_path):
    """A rank whose share of a global batch is empty: no NaN from its mean over nothing, no hang in DDP's
    all-reduce, and both ranks end with the weights one process computes from the whole batch."""
    penalty, single_weights = one_step(hinge_cfg(0.0), 0, 1, Distributed(0, 1, torch.device("cpu"), False))
    mp.spawn(_lopsided_rank, args=(f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        rank_penalty, applied, weights = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert applied and abs(rank_penalty - penalty) < 1e-4 * penalty
        for key, value in single_weights.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-4)
