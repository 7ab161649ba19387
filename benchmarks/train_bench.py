"""Training throughput per preset against the reference SASRec, in one process, on MovieLens-1M batches.

    .venv/bin/python -m benchmarks.train_bench                       # every preset; benchmarks/results/train.json
    .venv/bin/python -m benchmarks.train_bench --presets baseline,swiglu --batches 4 --repeats 2 --data DATA_DIR

Both models train on the SAME global batches of 128 real ML-1M training sequences (from ``--data``, a
preprocessed directory, else the cached one, else built from the cached events: benchmarks/ml1m.py). Ours runs
the trainer's own step, ``trainer.step.train_step`` (forward, ``loss_terms`` with logits only at target positions,
backward, clipping, the AdamW of ``build_optimizer``) on ``TrainingSet.batch`` (bucketed, padded to the batch's
longest row). The reference (benchmarks/reference_sasrec.py) pads every row to max_len and computes
logits at every position. Each step includes building its batch.

The timed batches are spread evenly over the widths of an epoch's bucketed batches (short to max_len), so their
mix is an epoch's. ``--repeats`` rounds step every model (the reference and each preset) through them, and each
batch's FASTEST step counts: other processes on a shared machine only ever add time, so the minimum is the
figure that does not depend on them (as ``timeit`` does), and rounds spread each model's samples over the whole
run; the matmul peak is the fastest product of the rounds. Reported per preset: real (non-padding) target tokens per second,
model FLOP/s (benchmarks/flops.py states the formula), MFU = model FLOP/s / the dense matmul peak measured in
this run, and ours / reference tokens/s.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.autograd.profiler import record_function

from benchmarks import ml1m
from benchmarks.flops import ModelShape, matmul_peak, train_flops
from benchmarks.reference_sasrec import ReferenceSASRec
from core import storage
from trainer.data import TrainingSet, gather
from trainer.distributed import Distributed
from trainer.job import resolve_configs
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.presets import PRESETS
from trainer.step import StepContext, autocast, train_step
from trainer.train import build_optimizer, seed_everything, uses_bf16
from trainer.train_config import TrainConfig

log = logging.getLogger("benchmarks.train")

RESULT = "benchmarks/results/train.json"
Step = Callable[[Tensor], int]  # trains on the examples of one global batch, returns its real target tokens


def distinct_presets() -> tuple[list[str], dict[str, str]]:
    """Presets with their own model config, and the others mapped to the first preset with the same model (the
    schedule presets train the baseline model: their steps cost the same)."""
    measured, same_as, seen = [], {}, {}
    for name in PRESETS:
        cfg = resolve_configs(name)[0]
        if cfg in seen:
            same_as[name] = seen[cfg]
        else:
            seen[cfg] = name
            measured.append(name)
    return measured, same_as


def epoch_batches(data: TrainingSet, batch_size: int, count: int, seed: int) -> list[Tensor]:
    """The first ``count`` global batches of epochs 0, 1, ..., bucketed exactly as the trainer orders them."""
    if data.steps_per_epoch(batch_size) < 1:
        raise ValueError(f"--batch-size: {batch_size} exceeds the {len(data)} training sequences")
    batches: list[Tensor] = []
    epoch = 0
    while len(batches) < count:
        batches += data.epoch_batches(batch_size, TrainConfig.bucket_batches, seed, epoch)
        epoch += 1
    return batches[:count]


def spread_batches(data: TrainingSet, batch_size: int, count: int, seed: int) -> list[Tensor]:
    """``count`` batches of epoch 0 at evenly spaced quantiles of its batch widths: an epoch's mix of short and
    long batches in a few steps (the narrowest and the widest always among them when count >= 2)."""
    epoch = epoch_batches(data, batch_size, max(count, data.steps_per_epoch(batch_size)), seed)
    by_width = sorted(epoch, key=lambda examples: int(data.length[examples].max()))
    if count == 1:
        return [by_width[len(by_width) // 2]]
    return [by_width[round(i * (len(by_width) - 1) / (count - 1))] for i in range(count)]


class OurStep:
    """The trainer's own step (``trainer.step.train_step``) on the trainer's batch path, with its numerics
    (``train_cfg.amp``: bf16 autocast on GPU) and ``train_cfg.compile``: what is benchmarked is what trains."""

    def __init__(self, cfg: ModelConfig, data: TrainingSet, train_cfg: TrainConfig, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        self.model = InterestModel(cfg, data.seqs.num_items).to(device).train()
        forward = torch.compile(self.model) if train_cfg.compile else self.model
        optimizer = build_optimizer(self.model, train_cfg, device)  # fused AdamW on GPU
        self.context = StepContext(self.model, forward, optimizer, cfg, train_cfg.grad_clip,
                                   Distributed(0, 1, device, owns_group=False), uses_bf16(train_cfg, device),
                                   data.item_frequencies().to(device))

    def __call__(self, examples: Tensor) -> int:
        with record_function("data"):
            batch = self.data.batch(examples)
        result = train_step(self.context, batch)
        if result.non_finite:  # the trainer would stop or skip; a benchmark must not time a broken step
            raise FloatingPointError(f"{self.cfg}: {result.non_finite} in the benchmark")
        return batch.tokens


class ReferenceStep:
    """One optimizer step of the reference on rows left-padded to max_len, with plain AdamW (bf16 autocast and
    fused AdamW on GPU, as anyone would switch on); labelled like ``OurStep``."""

    def __init__(self, cfg: ModelConfig, data: TrainingSet, train_cfg: TrainConfig, device: torch.device):
        self.cfg, self.data, self.device = cfg, data, device
        self.model = ReferenceSASRec.like(cfg, data.seqs.num_items).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_cfg.lr, betas=train_cfg.betas,
                                           fused=device.type == "cuda")
        self.bf16 = uses_bf16(train_cfg, device)

    def __call__(self, examples: Tensor) -> int:
        data, device = self.data, self.device
        with record_function("data"):
            inputs, rows = gather(data.seqs, data.start[examples], data.length[examples], width=self.cfg.max_len)
            targets = torch.where(rows > 0, data.seqs.columns["items"][rows + 1].long(), 0)
            items, targets = inputs["items"].to(device), targets.to(device)
        with autocast(device, self.bf16):
            with record_function("forward"):
                hidden = self.model(items)
            with record_function("loss"):
                loss = self.model.full_cross_entropy(hidden, targets).float()
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return int((targets > 0).sum())


@dataclass
class Meter:
    """The fastest step seen for each of a fixed list of batches, and their real tokens and model FLOPs."""

    batches: list[Tensor]
    data: TrainingSet
    shape: ModelShape
    batch_seconds: list[float] = field(init=False)
    tokens: int = field(init=False)
    flops: int = field(init=False)

    def __post_init__(self) -> None:
        self.batch_seconds = [math.inf] * len(self.batches)
        self.tokens = int(sum(int(self.data.length[b].sum()) for b in self.batches))
        self.flops = sum(train_flops(self.shape, self.data.length[b].tolist()) for b in self.batches)

    def run(self, step: Step, device: torch.device, repeats: int = 1) -> None:
        """Step through every batch ``repeats`` times, keeping each batch's fastest step."""
        for i, examples in enumerate(self.batches):
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                tokens = step(examples)
                _sync(device)
                self.batch_seconds[i] = min(self.batch_seconds[i], time.perf_counter() - start)
                if tokens != int(self.data.length[examples].sum()):
                    raise RuntimeError(f"a step trained on {tokens} tokens, its batch has "
                                       f"{int(self.data.length[examples].sum())}")

    @property
    def seconds(self) -> float:
        return sum(self.batch_seconds)

    def report(self, peak: float) -> dict[str, float]:
        rate = self.flops / self.seconds
        return {"tokens_per_second": self.tokens / self.seconds, "flops_per_second": rate, "mfu": rate / peak,
                "seconds": self.seconds, "tokens": self.tokens, "batch_seconds": self.batch_seconds}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def preset_names(text: str) -> list[str]:
    """``--presets a,b`` as a list of known preset names; an unknown one stops with the allowed names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SystemExit(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    return names


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    measured, same_as = distinct_presets()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(measured),
                        help=f"comma-separated presets (default: every distinct model: {','.join(measured)})")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: the cached one, "
                                                     "else built from the cached events)")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per global batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--batches", type=int, default=6, help="timed batches, spread over an epoch's widths")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all models, one step per timed batch each; the fastest step counts")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--output", default=RESULT, help="where the JSON result goes")
    args = parser.parse_args(argv)
    names = preset_names(args.presets)
    if min(args.batches, args.repeats) < 1 or args.warmup < 0:
        raise SystemExit("--batches and --repeats: must be >= 1; --warmup: must be >= 0")
    device = torch.device(args.device)
    seed_everything(args.seed)

    train_cfg = TrainConfig(batch_size=args.batch_size)
    seqs = ml1m.load(args.data)
    configs = {name: resolve_configs(name)[0] for name in names}
    reference_cfg = configs[names[0]]
    for name, cfg in configs.items():
        if (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.max_len) != (
                reference_cfg.d_model, reference_cfg.n_layer, reference_cfg.n_head, reference_cfg.max_len):
            raise SystemExit(f"--presets: {name} has other sizes than {names[0]}; benchmark them in separate runs")
    max_len = reference_cfg.max_len
    data = TrainingSet(seqs, max_len)
    timed = spread_batches(data, args.batch_size, args.batches, args.seed)
    warmup = epoch_batches(data, args.batch_size, args.warmup, args.seed + 1)
    padded_share = 1 - float(data.length.sum()) / (len(data) * max_len)
    log.info("ML-1M: %d training sequences, %d items, %.0f%% of a max_len-padded batch is padding",
             len(data), seqs.num_items, 100 * padded_share)

    models = {"reference": (ReferenceStep, reference_cfg,
                            ModelShape(reference_cfg.d_model, reference_cfg.n_layer, 4 * reference_cfg.d_model,
                                       False, seqs.num_items))}
    models.update({name: (OurStep, cfg, ModelShape.of(cfg, seqs.num_items)) for name, cfg in configs.items()})
    steps, meters = {}, {}
    for name, (make, cfg, shape) in models.items():
        torch.manual_seed(args.seed)
        steps[name], meters[name] = make(cfg, data, train_cfg, device), Meter(timed, data, shape)
        for examples in warmup:
            steps[name](examples)
    # Rounds over all models: a burst of load from another process slows one round of a few models, and the
    # next rounds measure them again; each batch keeps its fastest step, the peak its fastest product.
    peaks = []
    for round_index in range(args.repeats):
        peaks.append(matmul_peak(device))
        for name, step in steps.items():
            meters[name].run(step, device)
        log.info("round %d of %d: %s", round_index + 1, args.repeats, ", ".join(
            f"{name} {m.tokens / m.seconds:,.0f}" for name, m in meters.items()))
    peaks.append(matmul_peak(device))
    peak = max(peaks, key=lambda p: p["flops_per_second"])
    log.info("dense %s matmul peak %.0f GFLOP/s", peak["dtype"], peak["flops_per_second"] / 1e9)

    ref = meters.pop("reference").report(peak["flops_per_second"])
    presets = {}
    for name, meter in meters.items():
        row = meter.report(peak["flops_per_second"])
        row["ratio_vs_reference"] = row["tokens_per_second"] / ref["tokens_per_second"]
        presets[name] = row
    result = {
        "benchmark": "train",
        "command": " ".join(["python -m benchmarks.train_bench", *argv]),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "load_average": os.getloadavg(),
        "peak": {**peak, "rounds": [p["flops_per_second"] for p in peaks]},
        "data": {"source": args.data or "ml-1m (benchmarks/ml1m.py)", "sequences": len(data),
                 "items": seqs.num_items, "max_len": max_len, "batch_size": args.batch_size,
                 "padding_share_at_max_len": padded_share,
                 "timed_batch_widths": [int(data.length[b].max()) for b in timed],
                 "timed_tokens_per_batch": ref["tokens"] / len(timed)},
        "warmup_steps": args.warmup, "repeats": args.repeats,
        "reference": ref,
        "presets": presets,
        "same_model_as": {k: v for k, v in same_as.items() if v in presets},
        "targets": {"ratio_baseline": 2.0, "ratio_every_preset": 1.5, "mfu": 0.25},
    }
    storage.write_json(args.output, result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.report import markdown_table

    print(markdown_table(train=main()))
