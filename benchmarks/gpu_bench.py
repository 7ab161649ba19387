"""``make bench-gpu``: training throughput and MFU of bigger models on one GPU, against its measured bf16 peak.

    .venv/bin/python -m benchmarks.gpu_bench                          # benchmarks/results/gpu.json, < 5 min on an H100
    .venv/bin/python -m benchmarks.gpu_bench --config d_model=384,n_layer=6,n_head=6 --batch-size 1024
    .venv/bin/python -m benchmarks.gpu_bench --device cpu --config d_model=32,n_layer=1,n_head=2 \\
        --batch-size 64 --warmup 1 --steps 2 --no-compile              # smoke run of the code path, no GPU

The GPU path of the trainer: bf16 autocast (``TrainConfig.amp='auto'``), fused AdamW (``build_optimizer``),
``torch.compile`` (``TrainConfig.compile``), ``F.scaled_dot_product_attention`` (the kernel SDPA picks is
recorded: flash attention needs no explicit mask, efficient attention takes the padding mask), and large batches
of real ML-1M sequences. The reference SASRec runs the same batches with bf16 autocast and fused AdamW, eager.
MFU = model FLOP/s (benchmarks/flops.py) / the dense bf16 matmul peak measured in this run.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import ml1m
from benchmarks.flops import ModelShape, matmul_peak
from benchmarks.train_bench import Meter, OurStep, ReferenceStep, epoch_batches, spread_batches
from core import storage
from trainer.data import TrainingSet
from trainer.job import resolve_configs
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.presets import get_preset
from trainer.train import seed_everything, uses_bf16
from trainer.train_config import TrainConfig

log = logging.getLogger("benchmarks.gpu")

RESULT = "benchmarks/results/gpu.json"
CONFIGS = ("d_model=256,n_layer=4,n_head=4", "d_model=512,n_layer=8,n_head=8")


def require_device(device: torch.device) -> None:
    """Fail in the first second, with the reason, when the requested GPU is not there."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench-gpu: CUDA is not available (torch {torch.__version__}, built for CUDA "
                         f"{torch.version.cuda or 'none: a CPU-only build'}); run it on a GPU machine, or add "
                         "--device cpu for a smoke run of the code path")


def shape_covering(data: TrainingSet, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The narrowest, the widest and the median-width batch: torch.compile specializes on the batch width (short,
    long, exactly max_len), so warming up on these compiles every graph before timing starts."""
    by_width = sorted(batches, key=lambda examples: int(data.length[examples].max()))
    return [by_width[0], by_width[-1], by_width[len(by_width) // 2]]


def attention_kernels(cfg: ModelConfig, data: TrainingSet, examples: torch.Tensor, device: torch.device,
                      bf16: bool) -> list[str]:
    """The ``aten::_scaled_dot_product_*`` kernels one training forward pass of the model runs on this device
    (with gradients and dropout on: both narrow the kernels SDPA may pick)."""
    model = InterestModel(cfg, data.seqs.num_items).to(device).train()
    inputs = {k: v.to(device) for k, v in data.batch(examples).inputs.items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof, \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(inputs)
    return sorted({e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")})


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (cpu only for a smoke run)")
    parser.add_argument("--config", action="append", default=None,
                        help=f"ModelConfig overrides key=value,... of one model (repeatable; default: {CONFIGS})")
    parser.add_argument("--preset", default="baseline", help="preset the configs start from")
    parser.add_argument("--batch-size", type=int, default=512, help="sequences per step")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps after the 3 that compile the narrow, wide and max_len graphs")
    parser.add_argument("--batches", type=int, default=8, help="timed batches, spread over an epoch's widths")
    parser.add_argument("--repeats", type=int, default=2, help="steps per timed batch; the fastest counts "
                                                               "(a graph compiled on the first is not timed)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--data", default=None, help="preprocessed ML-1M directory (default: cached events)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=RESULT, help="where the JSON result goes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    require_device(device)
    seed_everything(args.seed)
    get_preset(args.preset)  # an unknown name stops here with the allowed ones
    configs = {spec: resolve_configs(args.preset, spec.split(","))[0] for spec in args.config or CONFIGS}
    train_cfg = TrainConfig(batch_size=args.batch_size, compile=not args.no_compile)
    bf16 = uses_bf16(train_cfg, device)

    seqs = ml1m.load(args.data)
    peak = matmul_peak(device)
    log.info("dense %s matmul peak: %.1f TFLOP/s", peak["dtype"], peak["flops_per_second"] / 1e12)
    models = {}
    for spec, cfg in configs.items():
        data = TrainingSet(seqs, cfg.max_len)
        timed = spread_batches(data, args.batch_size, args.batches, args.seed)
        epoch = epoch_batches(data, args.batch_size, data.steps_per_epoch(args.batch_size), args.seed + 1)
        warmup = shape_covering(data, epoch) + epoch[:args.warmup]
        shape = ModelShape.of(cfg, seqs.num_items)
        reference_shape = ModelShape(cfg.d_model, cfg.n_layer, 4 * cfg.d_model, False, seqs.num_items)
        row = {"params": InterestModel(cfg, seqs.num_items).num_parameters(),
               "attention_kernels": attention_kernels(cfg, data, warmup[0], device, bf16)}
        for who, make, model_shape in (("ours", OurStep, shape), ("reference", ReferenceStep, reference_shape)):
            torch.manual_seed(args.seed)
            step = make(cfg, data, train_cfg, device)
            for examples in warmup:
                step(examples)
            meter = Meter(timed, data, model_shape)
            meter.run(step, device, args.repeats)
            row[who] = meter.report(peak["flops_per_second"])
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row["ratio_vs_reference"] = row["ours"]["tokens_per_second"] / row["reference"]["tokens_per_second"]
        models[spec] = row
        log.info("%s: %.0f tokens/s (MFU %.1f%%), reference %.0f tokens/s, %.2fx; attention %s", spec,
                 row["ours"]["tokens_per_second"], 100 * row["ours"]["mfu"], row["reference"]["tokens_per_second"],
                 row["ratio_vs_reference"], row["attention_kernels"])
    result = {
        "benchmark": "train_gpu",
        "command": " ".join(["python -m benchmarks.gpu_bench", *argv]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__, "platform": platform.platform(),
        "bf16": bf16, "compile": train_cfg.compile, "batch_size": args.batch_size, "preset": args.preset,
        "warmup_steps": args.warmup, "batches": args.batches, "repeats": args.repeats,
        "peak": peak,
        "models": models,
    }
    storage.write_json(args.output, result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.report import gpu_table

    print(gpu_table(main()))
