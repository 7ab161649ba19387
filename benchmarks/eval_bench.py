"""Throughput of the full-catalogue evaluation (trainer.metrics) at ML-1M test-split size.

6,040 users x 3,416 items, d=64 random embeddings, histories of random length with ML-1M's mean (~165 items),
timed after one warm-up call (median of ``--repeats``). Target: the whole split well under 2 s on a 2-core CPU.

    .venv/bin/python -m benchmarks.eval_bench                  # writes benchmarks/results/eval.json
    .venv/bin/python -m benchmarks.eval_bench --device cuda --output benchmarks/results/eval_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from core import storage
from trainer.metrics import full_ranking_metrics, history_csr, summarize

USERS, ITEMS, DIM = 6040, 3416, 64
MEAN_HISTORY = 165  # ML-1M: 999,611 interactions / 6,040 users


def make_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.randn(USERS, DIM, generator=gen)
    item_emb = torch.randn(ITEMS + 1, DIM, generator=gen)
    targets = torch.randint(1, ITEMS + 1, (USERS,), generator=gen)
    lengths = torch.randint(20, 2 * MEAN_HISTORY - 20, (USERS,), generator=gen)
    histories = [torch.randint(1, ITEMS + 1, (int(n),), generator=gen).tolist() for n in lengths]
    return user_emb, item_emb, targets, history_csr(histories)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up call")
    parser.add_argument("--batch-size", type=int, default=1024, help="users scored per matmul")
    parser.add_argument("--output", default="benchmarks/results/eval.json", help="where the JSON result goes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    user_emb, item_emb, targets, history = make_inputs()
    user_emb, item_emb = user_emb.to(device), item_emb.to(device)
    timings = []
    for _ in range(args.repeats + 1):
        sync(device)
        start = time.perf_counter()
        per_user = full_ranking_metrics(user_emb, item_emb, targets, history, batch_size=args.batch_size)
        sync(device)
        timings.append(time.perf_counter() - start)
    seconds = statistics.median(timings[1:])
    result = {
        "benchmark": "full_ranking_metrics",
        "users": USERS, "items": ITEMS, "dim": DIM, "batch_size": args.batch_size,
        "mean_history": float(history[0].diff().float().mean()),
        "device": str(device), "threads": torch.get_num_threads(), "platform": platform.platform(),
        "torch": torch.__version__,
        "first_call_seconds": timings[0], "seconds_median": seconds, "seconds_all": timings[1:],
        "users_per_second": USERS / seconds,
        "recall@10_random": summarize(per_user, ITEMS)["recall@10"],  # ~10/3,416 for random embeddings
    }
    storage.write_json(args.output, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
