"""Training throughput per preset against the reference SASRec, in one process, on MovieLens-1M batches.

    .venv/bin/python -m benchmarks.train_bench                       # every preset; benchmarks/results/train.json
    .venv/bin/python -m benchmarks.train_bench --presets baseline,swiglu --steps 8 --data DATA_DIR

Both models train on the SAME global batches of 128 real ML-1M training sequences (from ``--data``, a
preprocessed directory, else built from the cached events: benchmarks/ml1m.py). Ours runs the trainer's path:
``TrainingSet.batch`` (bucketed, padded to the batch's longest row), ``loss_terms`` (logits only at target
positions), ``build_optimizer`` (AdamW) and gradient clipping, as ``trainer.train.Trainer._step`` does on one
process. The reference (benchmarks/reference_sasrec.py) pads every row to max_len and computes logits at every
position. Each step includes building its batch.

Reported per preset: real (non-padding) target tokens per second, model FLOP/s (benchmarks/flops.py states the
formula), MFU = model FLOP/s / the dense matmul peak measured in this run, and ours / reference tokens/s. The
reference runs a few steps after every preset, cycling through the same timed batches, and its rate is pooled
over the whole run, so every ratio shares one reference figure measured under the same load as the presets.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import platform
import statistics
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
from pipelines import storage
from trainer.config import ModelConfig
from trainer.data import TrainingSet, gather
from trainer.losses import loss_terms
from trainer.model import InterestModel
from trainer.presets import PRESETS
from trainer.train import build_optimizer, seed_everything, uses_bf16
from trainer.training_config import TrainConfig

log = logging.getLogger("benchmarks.train")

RESULT = "benchmarks/results/train.json"
Step = Callable[[Tensor], int]  # trains on the examples of one global batch, returns its real target tokens


def distinct_presets() -> tuple[list[str], dict[str, str]]:
    """Presets with their own model config, and the others mapped to the first preset with the same model (the
    schedule presets train the baseline model: their steps cost the same)."""
    measured, same_as, seen = [], {}, {}
    for name, preset in PRESETS.items():
        cfg = preset.model_config()
        if cfg in seen:
            same_as[name] = seen[cfg]
        else:
            seen[cfg] = name
            measured.append(name)
    return measured, same_as


def timed_batches(data: TrainingSet, batch_size: int, count: int, seed: int) -> list[Tensor]:
    """The first ``count`` global batches of epochs 0, 1, ..., bucketed exactly as the trainer orders them."""
    if data.steps_per_epoch(batch_size) < 1:
        raise ValueError(f"--batch-size: {batch_size} exceeds the {len(data)} training sequences")
    batches: list[Tensor] = []
    epoch = 0
    while len(batches) < count:
        batches += data.epoch_batches(batch_size, TrainConfig.bucket_batches, seed, epoch)
        epoch += 1
    return batches[:count]


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class OurStep:
    """One optimizer step of InterestModel on the trainer's batch and loss path, with its numerics
    (``train_cfg.amp``: bf16 autocast on GPU) and ``train_cfg.compile``. The phases are labelled for
    torch.profiler (benchmarks/profile_step.py); the labels cost nothing when no profiler runs."""

    def __init__(self, cfg: ModelConfig, data: TrainingSet, train_cfg: TrainConfig, device: torch.device):
        self.cfg, self.data, self.train_cfg, self.device = cfg, data, train_cfg, device
        self.model = InterestModel(cfg, data.seqs.num_items).to(device).train()
        self.forward = torch.compile(self.model) if train_cfg.compile else self.model
        self.optimizer = build_optimizer(self.model, train_cfg, device)  # fused AdamW on GPU
        self.frequencies = data.item_frequencies().to(device)
        self.bf16 = uses_bf16(train_cfg, device)

    def __call__(self, examples: Tensor) -> int:
        device = self.device
        with record_function("data"):
            batch = self.data.batch(examples)
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
            targets = batch.targets.to(device, non_blocking=True)
        with autocast(device, self.bf16):
            with record_function("forward"):
                hidden = self.forward(inputs)
            with record_function("loss"):
                total = loss_terms(self.model, hidden, targets, self.cfg, self.frequencies).total.float()
                if not math.isfinite(float(total.detach())):  # the trainer checks every step too (one sync)
                    raise FloatingPointError(f"{self.cfg}: non-finite loss in the benchmark")
        with record_function("backward"):
            total.backward()
        with record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip or math.inf)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
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
    """Seconds, real tokens and model FLOPs summed over timed steps."""

    seconds: float = 0.0
    tokens: int = 0
    flops: int = 0
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)  # a slow outlier is a recompile or a noisy neighbour

    def run(self, step: Step, batches: list[Tensor], data: TrainingSet, shape: ModelShape,
            device: torch.device) -> None:
        for examples in batches:
            _sync(device)
            start = time.perf_counter()
            tokens = step(examples)
            _sync(device)
            self.step_seconds.append(time.perf_counter() - start)
            self.seconds += self.step_seconds[-1]
            self.tokens += tokens
            self.flops += train_flops(shape, data.length[examples].tolist())
            self.steps += 1

    def report(self, peak: float) -> dict[str, float]:
        rate = self.flops / self.seconds
        return {"tokens_per_second": self.tokens / self.seconds, "flops_per_second": rate, "mfu": rate / peak,
                "seconds": self.seconds, "steps": self.steps, "tokens": self.tokens,
                "step_seconds_median": statistics.median(self.step_seconds), "step_seconds_max": max(self.step_seconds)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    measured, same_as = distinct_presets()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(measured),
                        help=f"comma-separated presets (default: every distinct model: {','.join(measured)})")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: built from the "
                                                     "cached events of `interest data fetch --dataset ml-1m`)")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per global batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per preset (the same batches for all)")
    parser.add_argument("--reference-steps", type=int, default=2,
                        help="reference steps timed after each preset, cycling through the timed batches")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the batch order")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--output", default=RESULT, help="where the JSON result goes")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SystemExit(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    device = torch.device(args.device)
    seed_everything(args.seed)

    train_cfg = TrainConfig(batch_size=args.batch_size)
    seqs = ml1m.load(args.data)
    configs = {name: PRESETS[name].model_config() for name in names}
    max_len = configs[names[0]].max_len
    data = TrainingSet(seqs, max_len)
    batches = timed_batches(data, args.batch_size, args.warmup + args.steps, args.seed)
    warmup, timed = batches[:args.warmup], batches[args.warmup:]
    padded_share = 1 - float(data.length.sum()) / (len(data) * max_len)
    log.info("ML-1M: %d training sequences, %d items, %.0f%% of a max_len-padded batch is padding",
             len(data), seqs.num_items, 100 * padded_share)

    peak_before = matmul_peak(device)
    reference_cfg = configs[names[0]]
    reference = ReferenceStep(reference_cfg, data, train_cfg, device)
    reference_shape = ModelShape(reference_cfg.d_model, reference_cfg.n_layer, 4 * reference_cfg.d_model, False,
                                 seqs.num_items)
    for examples in warmup:
        reference(examples)
    reference_meter, cursor, results = Meter(), 0, {}
    for name in names:
        cfg = configs[name]
        if (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.max_len) != (
                reference_cfg.d_model, reference_cfg.n_layer, reference_cfg.n_head, reference_cfg.max_len):
            raise SystemExit(f"--presets: {name} has other sizes than {names[0]}; benchmark them in separate runs")
        torch.manual_seed(args.seed)
        step, meter, shape = OurStep(cfg, data, train_cfg, device), Meter(), ModelShape.of(cfg, seqs.num_items)
        for examples in warmup:
            step(examples)
        meter.run(step, timed, data, shape, device)
        results[name] = meter
        chunk = [timed[(cursor + i) % len(timed)] for i in range(args.reference_steps)]
        cursor += args.reference_steps
        reference_meter.run(reference, chunk, data, reference_shape, device)
        log.info("%-14s %8.0f tokens/s   reference so far %7.0f tokens/s", name,
                 meter.tokens / meter.seconds, reference_meter.tokens / reference_meter.seconds)
    peak_after = matmul_peak(device)
    peak = max(peak_before, peak_after, key=lambda p: p["flops_per_second"])

    flops_per_second = peak["flops_per_second"]
    ref = reference_meter.report(flops_per_second)
    presets = {}
    for name, meter in results.items():
        row = meter.report(flops_per_second)
        row["ratio_vs_reference"] = row["tokens_per_second"] / ref["tokens_per_second"]
        presets[name] = row
    result = {
        "benchmark": "train",
        "command": " ".join(["python -m benchmarks.train_bench", *argv]),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(),
        "peak": {**peak, "before": peak_before["flops_per_second"], "after": peak_after["flops_per_second"]},
        "data": {"source": args.data or "cached ml-1m events", "sequences": len(data), "items": seqs.num_items,
                 "max_len": max_len, "batch_size": args.batch_size,
                 "padding_share_at_max_len": padded_share,
                 "timed_tokens_per_batch": results[names[0]].tokens / len(timed)},
        "warmup_steps": args.warmup, "timed_steps": args.steps,
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
