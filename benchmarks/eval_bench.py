"""Throughput of the full-catalogue evaluation (trainer.metrics) at ML-1M test-split size.

6,040 users x 3,416 items, d=64 random embeddings, histories of random length with ML-1M's mean (~165 items),
timed after one warm-up call (median of ``--repeats``). Target: the whole split well under 2 s on a 2-core CPU.
``--items``/``--users`` scale the catalogue and the users; ``--item-block`` sets how many items are scored at a
time, and ``peak_rss_mib`` (this process's peak resident memory) shows what it bounds.

    .venv/bin/python -m benchmarks.eval_bench                  # writes benchmarks/results/eval.json
    .venv/bin/python -m benchmarks.eval_bench --device cuda --output benchmarks/results/eval_cuda.json
    .venv/bin/python -m benchmarks.eval_bench --items 1000000 --users 2048 --item-block 65536 --repeats 1 \
        --output benchmarks/results/eval_1m_items.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from core import storage
from trainer.blocks import DEFAULT_ITEM_BLOCK
from trainer.metrics import full_ranking_metrics, history_csr, summarize

USERS, ITEMS, DIM = 6040, 3416, 64
MEAN_HISTORY = 165  # ML-1M: 999,611 interactions / 6,040 users


def make_inputs(seed: int = 0, users: int = USERS, items: int = ITEMS):
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(users, DIM, generator=gen)
    item_emb = torch.randn(items + 1, DIM, generator=gen)
    targets = torch.randint(1, items + 1, (users,), generator=gen)
    lengths = torch.randint(20, 2 * MEAN_HISTORY - 20, (users,), generator=gen)
    histories = [torch.randint(1, items + 1, (int(n),), generator=gen).tolist() for n in lengths]
    return user_emb, item_emb, targets, history_csr(histories)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up call")
    parser.add_argument("--batch-size", type=int, default=1024, help="users scored per matmul")
    parser.add_argument("--users", type=int, default=USERS, help=f"users ranked (default {USERS:,}: ML-1M)")
    parser.add_argument("--items", type=int, default=ITEMS, help=f"catalogue size (default {ITEMS:,}: ML-1M)")
    parser.add_argument("--item-block", type=int, default=DEFAULT_ITEM_BLOCK, help="items scored at a time")
    parser.add_argument("--output", default="benchmarks/results/eval.json", help="where the JSON result goes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    user_emb, item_emb, targets, history = make_inputs(users=args.users, items=args.items)
    inputs_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    user_emb, item_emb = user_emb.to(device), item_emb.to(device)
    timings = []
    for _ in range(args.repeats + 1):
        sync(device)
        start = time.perf_counter()
        per_user = full_ranking_metrics(user_emb, item_emb, targets, history, batch_size=args.batch_size,
                                        item_block=args.item_block)
        sync(device)
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings[1:])
    result = {
        "benchmark": "full_ranking_metrics",
        "users": args.users, "items": args.items, "dim": DIM, "batch_size": args.batch_size,
        "item_block": args.item_block,
        "mean_history": float(history[0].diff().float().mean()),
        "device": str(device), "threads": torch.get_num_threads(), "platform": platform.platform(),
        "torch": torch.__version__,
        "first_call_seconds": timings[0], "seconds_median": seconds, "seconds_all": timings[1:],
        "users_per_second": args.users / seconds,
        "recall@10_random": summarize(per_user, args.items)["recall@10"],  # ~10/N for random embeddings
        # Peak resident memory of the process (Linux ru_maxrss), and of it before ranking (inputs and torch).
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "inputs_rss_mib": inputs_rss,
    }
    storage.write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
