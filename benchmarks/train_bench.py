"""Training throughput per preset against the reference SASRec, in one process, on MovieLens-1M.

    .venv/bin/python -m benchmarks.train_bench                       # every preset; benchmarks/results/train.json
    .venv/bin/python -m benchmarks.train_bench --presets baseline --rounds 3 --data DATA_DIR

What counts is THE TRAINER'S OWN figure: each round runs ``trainer.train.train`` for ``--steps`` real optimizer
steps (default: one epoch, so the batches are an epoch's mix of short and long ones; the reference pads every
row to max_len, so a sample of short batches would flatter the ratio) on the real ML-1M training data (``--data``, a preprocessed directory, else the cached one, else built
from the cached events: benchmarks/ml1m.py) and reads its ``summary.json`` tokens/s: real (non-padding) target
tokens over the time of data loading, the step (``trainer.step.train_step``) and logging, validation and
checkpoints excluded. The reported figure is the MEDIAN of ``--rounds`` rounds (not a best case).

Next to it, in the same run and on the same batches (the trainer's first ``--steps`` batches of epoch 0):
- ``step``: the same ``train_step`` on those batches without the trainer around it (median of rounds); the
  trainer's figure should be within 10% of it (what the loop adds: the DataLoader, the scheduler, bookkeeping,
  logging);
- the reference (benchmarks/reference_sasrec.py: every row padded to max_len, logits at every position, plain
  AdamW), median of rounds; ours / reference is the trainer's tokens/s over the reference's;
- the dense matmul peak (benchmarks/flops.py, the fastest product of this run, in the dtype the matmuls run in:
  fp32, or bf16 under ``--amp bf16``) and MFU = model FLOP/s / that peak.

Rounds visit every model in turn, so a burst of load from other processes on a shared machine lands on all of
them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
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
from trainer.data import TrainingSet, gather, load_sequences
from trainer.distributed import Distributed
from trainer.job import Configs, resolve_configs
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig
from trainer.presets import PRESETS
from trainer.step import StepContext, autocast, train_step
from trainer.train import build_optimizer, seed_everything, train, uses_bf16
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

    def __init__(self, cfg: ModelConfig, data: TrainingSet, train_cfg: TrainConfig, device: torch.device,
                 objective: ObjectiveConfig = ObjectiveConfig()):
        self.cfg, self.data, self.device = cfg, data, device
        self.model = InterestModel(cfg, data.seqs.num_items).to(device).train()
        forward = torch.compile(self.model) if train_cfg.compile else self.model
        optimizer = build_optimizer(self.model, train_cfg, device)  # fused AdamW on GPU
        self.context = StepContext(self.model, forward, optimizer, objective, train_cfg.grad_clip,
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

    def __init__(self, cfg: ModelConfig, data: TrainingSet, train_cfg: TrainConfig, device: torch.device,
                 objective: ObjectiveConfig = ObjectiveConfig()):
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


def bench_train_config(preset: str, steps: int, amp: str, batch_size: int) -> Configs:
    """The preset's configs for a benchmark round: ``steps`` optimizer steps, validation and a checkpoint only at
    the end (both outside the timed loop), everything else as the preset trains."""
    configs = resolve_configs(preset)
    return configs._replace(train=dataclasses.replace(
        configs.train, batch_size=batch_size, epochs=None, max_steps=steps, eval_every_steps=steps,
        checkpoint_every_steps=steps, patience=0, time_budget_seconds=None, amp=amp))


def trainer_round(data_dir: str, preset: str, configs: Configs) -> dict:
    """One real training run of ``configs.train.max_steps`` steps into a throw-away directory; its summary."""
    with tempfile.TemporaryDirectory(prefix="train-bench-") as out:
        return train(data_dir, out, configs.model, configs.train, name=preset, restart=True,
                     objective=configs.objective)


def timed_steps(step: Step, batches: list[Tensor], device: torch.device) -> tuple[float, int]:
    """Seconds and real tokens of stepping once through ``batches`` (batch building included)."""
    _sync(device)
    start, tokens = time.perf_counter(), 0
    for examples in batches:
        tokens += step(examples)
    _sync(device)
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    measured, same_as = distinct_presets()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(measured),
                        help=f"comma-separated presets (default: every distinct model: {','.join(measured)})")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: the cached one, "
                                                     "else built from the cached events)")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per global batch")
    parser.add_argument("--steps", type=int, default=0,
                        help="real optimizer steps per round and model (default 0: one epoch, every batch once, so "
                        "the mix of short and long batches is an epoch's; fewer steps sample it)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all models; the median counts")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                        help="TrainConfig.amp for ours and the reference alike (auto: fp32 on CPU, bf16 on GPU); "
                        "the matmul peak is measured in the same dtype")
    parser.add_argument("--seed", type=int, default=0, help="seeds the reference's weights")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--output", default=RESULT, help="where the JSON result goes")
    args = parser.parse_args(argv)
    names = preset_names(args.presets)
    if args.steps < 0 or args.rounds < 1:
        raise SystemExit("--steps: must be >= 0 (0: one epoch); --rounds: must be >= 1")
    device = torch.device(args.device)
    seed_everything(args.seed)
    data_dir = args.data or ml1m.preprocessed()
    seqs = load_sequences(data_dir)
    steps_per_epoch = TrainingSet(seqs, resolve_configs(names[0])[0].max_len).steps_per_epoch(args.batch_size)
    if steps_per_epoch < 1:
        raise SystemExit(f"--batch-size: {args.batch_size} exceeds the training sequences")
    args.steps = args.steps or steps_per_epoch
    configs = {name: bench_train_config(name, args.steps, args.amp, args.batch_size) for name in names}
    reference_cfg, _, first_train_cfg = configs[names[0]]
    for name, (cfg, _, _) in configs.items():
        if (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.max_len) != (
                reference_cfg.d_model, reference_cfg.n_layer, reference_cfg.n_head, reference_cfg.max_len):
            raise SystemExit(f"--presets: {name} has other sizes than {names[0]}; benchmark them in separate runs")
    max_len = reference_cfg.max_len
    bf16 = uses_bf16(first_train_cfg, device)
    data = TrainingSet(seqs, max_len, first_train_cfg.batch_width_multiple)
    # The trainer's own first batches: epoch 0 of its seed (every preset trains with the default seed).
    batches = data.epoch_batches(args.batch_size, first_train_cfg.bucket_batches, first_train_cfg.seed, 0)[:args.steps]
    if len(batches) < args.steps:
        raise SystemExit(f"--steps: an epoch has only {len(batches)} batches of {args.batch_size}")
    tokens = int(sum(int(data.length[b].sum()) for b in batches))
    padded_share = 1 - float(data.length.sum()) / (len(data) * max_len)
    log.info("ML-1M: %d training sequences, %d items; %d steps of %d real tokens on average", len(data),
             seqs.num_items, args.steps, tokens // args.steps)

    shapes = {"reference": ModelShape(reference_cfg.d_model, reference_cfg.n_layer, 4 * reference_cfg.d_model,
                                      False, seqs.num_items)}
    shapes.update({name: ModelShape.of(cfg, seqs.num_items, objective) for name, (cfg, objective, _) in configs.items()})
    flops = {name: sum(train_flops(shape, data.length[b].tolist()) for b in batches) for name, shape in shapes.items()}
    steps: dict[str, Step] = {"reference": ReferenceStep(reference_cfg, data, first_train_cfg, device)}
    steps.update({name: OurStep(cfg, data, train_cfg, device, objective)
                  for name, (cfg, objective, train_cfg) in configs.items()})
    for step in steps.values():  # untimed: thread pools, allocator, first-call kernels
        timed_steps(step, batches[:2], device)
    trainer_round(data_dir, names[0], bench_train_config(names[0], 2, args.amp, args.batch_size))

    seconds: dict[str, list[float]] = {name: [] for name in steps}
    trainer_rates: dict[str, list[float]] = {name: [] for name in names}
    peaks = []
    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    for round_index in range(args.rounds):
        peaks.append(matmul_peak(device, peak_dtype))
        for name, step in steps.items():
            elapsed, stepped = timed_steps(step, batches, device)
            if stepped != tokens:
                raise RuntimeError(f"{name}: {stepped} tokens stepped, the batches hold {tokens}")
            seconds[name].append(elapsed)
            if name in trainer_rates:
                summary = trainer_round(data_dir, name, configs[name])
                if summary["tokens"] != tokens:
                    raise RuntimeError(f"{name}: the trainer trained on {summary['tokens']} tokens, the bench's "
                                       f"batches hold {tokens}")
                trainer_rates[name].append(summary["tokens_per_second"])
        log.info("round %d of %d: %s", round_index + 1, args.rounds, ", ".join(
            f"{name} {tokens / seconds[name][-1]:,.0f}" + (f" (trainer {trainer_rates[name][-1]:,.0f})"
                                                           if name in trainer_rates else "")
            for name in steps))
    peaks.append(matmul_peak(device, peak_dtype))
    peak = max(peaks, key=lambda p: p["flops_per_second"])
    log.info("dense %s matmul peak %.0f GFLOP/s", peak["dtype"], peak["flops_per_second"] / 1e9)

    def rates(tokens_per_second: float, name: str) -> dict[str, float]:
        flops_per_second = flops[name] / (tokens / tokens_per_second)
        return {"tokens_per_second": tokens_per_second, "flops_per_second": flops_per_second,
                "mfu": flops_per_second / peak["flops_per_second"]}

    step_median = {name: tokens / statistics.median(values) for name, values in seconds.items()}
    ref = {**rates(step_median["reference"], "reference"), "rounds": [tokens / s for s in seconds["reference"]]}
    presets = {}
    for name in names:
        trainer_rate = statistics.median(trainer_rates[name])
        presets[name] = {
            **rates(trainer_rate, name),
            "ratio_vs_reference": trainer_rate / ref["tokens_per_second"],
            "trainer_rounds": trainer_rates[name],
            "step": {**rates(step_median[name], name), "rounds": [tokens / s for s in seconds[name]]},
            "trainer_vs_step": trainer_rate / step_median[name],
        }
    result = {
        "benchmark": "train",
        "command": " ".join(["python -m benchmarks.train_bench", *argv]),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "platform": platform.platform(), "load_average": os.getloadavg(), "bf16": bf16,
        "peak": {**peak, "rounds": [p["flops_per_second"] for p in peaks]},
        "data": {"source": data_dir, "sequences": len(data), "items": seqs.num_items, "max_len": max_len,
                 "batch_size": args.batch_size, "padding_share_at_max_len": padded_share,
                 "batch_widths": [int(data.length[b].max()) for b in batches], "tokens_per_step": tokens / args.steps},
        "steps": args.steps, "rounds": args.rounds,
        "reference": ref,
        "presets": presets,
        "same_model_as": {k: v for k, v in same_as.items() if v in presets},
        "targets": {"ratio_baseline": 6.0, "mfu": 0.35, "trainer_vs_step": 0.9},
    }
    storage.write_json(args.output, result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.report import markdown_table

    print(markdown_table(train=main()))
