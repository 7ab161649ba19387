"""Where a training step's time goes, per preset and for the reference: torch.profiler over a few steps.

    .venv/bin/python -m benchmarks.profile_step                        # baseline + reference
    .venv/bin/python -m benchmarks.profile_step --presets baseline,swiglu,rope,parallel --steps 3

Each step is labelled in phases (benchmarks/train_bench.py: data, forward, loss = output projection + softmax
cross-entropy, backward, optimizer = clipping + AdamW), and forward/backward hooks label every attention, MLP
and norm module, so the table splits the step into: data, attention, MLP, norms, output projection + softmax,
the rest of forward/backward (embeddings, time features, dropout, residuals), optimizer. Batches spread over an
epoch's widths as in the train benchmark; results in benchmarks/results/profile.json with the top operators of each model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import defaultdict

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from benchmarks import ml1m
from benchmarks.train_bench import OurStep, ReferenceStep, Step, epoch_batches, preset_names, spread_batches
from core import storage
from trainer.data import TrainingSet
from trainer.job import resolve_configs
from trainer.model import CausalSelfAttention, GatedMLP, GeluMLP
from trainer.train import seed_everything
from trainer.train_config import TrainConfig

log = logging.getLogger("benchmarks.profile")

RESULT = "benchmarks/results/profile.json"
PHASES = ("data", "forward", "loss", "backward", "optimizer")
PARTS = ("attention", "mlp", "norm")
TOP_OPS = 12
HIDDEN_GRAD = "hidden grad ready"  # marker: the loss's backward (output projection, softmax) is done


def module_parts(model: nn.Module) -> dict[nn.Module, str]:
    """Attention, MLP and norm modules of our model or of the reference (whose MLP is linear1 and linear2)."""
    parts = {}
    for module in model.modules():
        if isinstance(module, (CausalSelfAttention, nn.MultiheadAttention)):
            parts[module] = "attention"
        elif isinstance(module, (GeluMLP, GatedMLP)):
            parts[module] = "mlp"
        elif isinstance(module, nn.TransformerEncoderLayer):
            parts[module.linear1] = parts[module.linear2] = "mlp"
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            parts[module] = "norm"
    return parts


def label_modules(parts: dict[nn.Module, str]) -> list:
    """Profiler ranges ``part fwd`` / ``part bwd`` around each module's forward and backward; returns the hook
    handles (remove them after profiling)."""
    handles = []
    for module, part in parts.items():
        open_ranges: list[record_function] = []

        def enter(name: str, ranges: list = open_ranges) -> None:
            ranges.append(record_function(name))
            ranges[-1].__enter__()

        def leave(ranges: list = open_ranges) -> None:
            ranges.pop().__exit__(None, None, None)

        handles += [
            module.register_forward_pre_hook(lambda m, a, name=f"{part} fwd", enter=enter: enter(name)),
            module.register_forward_hook(lambda m, a, o, leave=leave: leave()),
            module.register_full_backward_pre_hook(lambda m, g, name=f"{part} bwd", enter=enter: enter(name)),
            module.register_full_backward_hook(lambda m, gi, go, leave=leave: leave()),
        ]
    return handles


def mark_hidden_grad(model: nn.Module):
    """A zero-length profiler marker when the gradient reaches the model's output (the hidden states): the
    backward pass before it belongs to the loss. Returns the hook handle."""
    def mark(grad: torch.Tensor) -> None:
        with record_function(HIDDEN_GRAD):
            pass

    return model.register_forward_hook(lambda m, a, hidden: hidden.register_hook(mark) and None)


def profile_steps(step: Step, model: nn.Module, batches: list[torch.Tensor]) -> dict:
    """Per-step milliseconds of each phase and part, and the top operators by self time."""
    handles = label_modules(module_parts(model)) + [mark_hidden_grad(model)]
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for examples in batches:
                step(examples)
            seconds = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    events = prof.key_averages()
    ms = defaultdict(float)
    for e in events:
        ms[e.key] += e.cpu_time_total / 1e3 / len(batches)  # microseconds -> ms per step, inclusive of children
    step_ms = 1e3 * seconds / len(batches)
    starts = {name: sorted(e.time_range.start for e in prof.events() if e.name == name)
              for name in ("backward", HIDDEN_GRAD)}
    loss_backward = sum(m - b for b, m in zip(starts["backward"], starts[HIDDEN_GRAD], strict=True))
    loss_backward_ms = loss_backward / 1e3 / len(batches)
    parts = {f"{p} {d}": ms[f"{p} {d}"] for p in PARTS for d in ("fwd", "bwd")}
    split = {
        "data": ms["data"],
        **{p: parts[f"{p} fwd"] + parts[f"{p} bwd"] for p in PARTS},
        "output projection + softmax (loss)": ms["loss"] + loss_backward_ms,
        "rest of forward + backward": ms["forward"] + ms["backward"] - loss_backward_ms - sum(parts.values()),
        "optimizer (clip + AdamW)": ms["optimizer"],
    }
    split["unlabelled"] = step_ms - sum(split.values())
    own = {e.key for e in events if e.key in PHASES or e.key in parts or e.key == HIDDEN_GRAD}
    top = sorted((e for e in events if e.key not in own), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "step_ms": step_ms,
        "ms": split,
        "share": {k: v / step_ms for k, v in split.items()},
        "phases_ms": {p: ms[p] for p in PHASES} | {"loss backward": loss_backward_ms},
        "parts_ms": parts,
        "top_ops": [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / len(batches), "calls": e.count // len(batches)}
                    for e in top[:TOP_OPS]],
    }


def table(results: dict[str, dict]) -> str:
    columns = list(next(iter(results.values()))["share"])
    rows = ["| model | step ms | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, r in results.items():
        rows.append(f"| {name} | {r['step_ms']:.0f} | " + " | ".join(f"{r['share'][c]:.0%}" for c in columns) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="baseline", help="comma-separated presets (the reference always runs)")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: cached)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    parser.add_argument("--steps", type=int, default=3,
                        help="profiled steps per model, on batches spread over an epoch's widths")
    parser.add_argument("--rounds", type=int, default=3, help="profiles per model; the fastest is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULT, help="where the JSON result goes")
    args = parser.parse_args(argv)
    names = preset_names(args.presets)
    seed_everything(args.seed)
    device = torch.device("cpu")
    seqs = ml1m.load(args.data)
    train_cfg = TrainConfig(batch_size=args.batch_size)
    configs = {name: resolve_configs(name)[0] for name in names}
    data = TrainingSet(seqs, configs[names[0]].max_len, train_cfg.batch_width_multiple)
    profiled = spread_batches(data, args.batch_size, args.steps, args.seed)
    warmup = epoch_batches(data, args.batch_size, args.warmup, args.seed + 1)
    steps = {name: OurStep(cfg, data, train_cfg, device) for name, cfg in configs.items()}
    steps["reference"] = ReferenceStep(configs[names[0]], data, train_cfg, device)
    for step in steps.values():
        for examples in warmup:
            step(examples)
    # Rounds over the models; each keeps its fastest round (load from other processes only adds time).
    results = {}
    for round_index in range(args.rounds):
        for name, step in steps.items():
            profiled_round = profile_steps(step, step.model, profiled)
            if name not in results or profiled_round["step_ms"] < results[name]["step_ms"]:
                results[name] = profiled_round
        log.info("round %d of %d: %s", round_index + 1, args.rounds,
                 ", ".join(f"{name} {r['step_ms']:.0f} ms" for name, r in results.items()))
    result = {"benchmark": "profile", "command": " ".join(["python -m benchmarks.profile_step", *argv]),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "load_average": os.getloadavg(),
              "tokens_per_step": float(sum(data.length[b].sum() for b in profiled)) / len(profiled),
              "models": results}
    storage.write_json(args.output, result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = main()
    print(table(out["models"]))
    for name, r in out["models"].items():
        print(f"\n{name}: top operators by self time (ms per step)")
        print("\n".join(f"  {o['op'][:70]:70s} {o['self_ms']:8.1f}  x{o['calls']}" for o in r["top_ops"]))
