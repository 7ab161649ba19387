"""One Markdown table from the benchmark results (the dicts the benchmarks return and write as JSON)."""

from __future__ import annotations

from typing import Any

HEADER = ("| benchmark | throughput | reference | ours / reference | MFU |\n"
          "|---|---:|---:|---:|---:|")


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}".rstrip()


def train_rows(train: dict[str, Any]) -> list[str]:
    ref = train["reference"]
    ref_rate = _rate(ref["tokens_per_second"], "tokens/s")
    rows = [f"| train `{name}` | {_rate(row['tokens_per_second'], 'tokens/s')} | {ref_rate} | "
            f"{row['ratio_vs_reference']:.2f}x | {row['mfu']:.1%} |" for name, row in train["presets"].items()]
    rows += [f"| train `{name}` | same model as `{other}` | | | |" for name, other in train["same_model_as"].items()]
    rows.append(f"| train reference SASRec (nn.TransformerEncoder, padded to {train['data']['max_len']}) | "
                f"{ref_rate} | | 1.00x | {ref['mfu']:.1%} |")
    return rows


def markdown_table(train: dict[str, Any] | None = None, preprocess: dict[str, Any] | None = None,
                   evaluation: dict[str, Any] | None = None) -> str:
    """The table, then one line on how MFU was measured; a missing result is left out."""
    rows = [HEADER]
    notes = []
    if train:
        rows += train_rows(train)
        peak = train["peak"]
        notes.append(f"MFU: model FLOP/s (real tokens only, benchmarks/flops.py) / dense {peak['dtype']} matmul "
                     f"peak {peak['flops_per_second'] / 1e9:,.0f} GFLOP/s measured in the same run on "
                     f"{train['device']} with {train['threads']} threads.")
        if "steps" in train:
            step_alone = ", ".join(f"`{name}` {row['step']['tokens_per_second']:,.0f} tokens/s (trainer / step "
                                   f"{row['trainer_vs_step']:.2f})" for name, row in train["presets"].items())
            load = ", ".join(f"{x:.1f}" for x in train.get("load_average", ()))
            notes.append(f"Ours: the trainer's own tokens/s (data, step, logging) over {train['steps']} real steps, "
                         f"median of {train['rounds']} rounds; the reference: the same batches, median of the "
                         f"same rounds. train_step alone on those batches: {step_alone}. Load average {load}.")
    if preprocess:
        rows.append(f"| preprocessing ({preprocess.get('description', 'ML-1M')}) | "
                    f"{_rate(preprocess['rows_per_second'], 'rows/s')} | | | |")
    if evaluation:
        rows.append(f"| full-catalogue evaluation ({evaluation['users']:,} users x {evaluation['items']:,} items) | "
                    f"{_rate(evaluation['users_per_second'], 'users/s')} | | | |")
    return "\n".join(rows + [""] + notes)


def gpu_table(gpu: dict[str, Any]) -> str:
    """The bench-gpu table: one row per model size."""
    rows = ["| model | params | tokens/s | reference tokens/s | ours / reference | MFU | attention kernel |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for spec, row in gpu["models"].items():
        rows.append(f"| {spec} | {row['params'] / 1e6:.1f}M | {_rate(row['ours']['tokens_per_second'], '')} | "
                    f"{_rate(row['reference']['tokens_per_second'], '')} | {row['ratio_vs_reference']:.2f}x | "
                    f"{row['ours']['mfu']:.1%} | {', '.join(row['attention_kernels'])} |")
    peak = gpu["peak"]
    rows += ["", f"{gpu['device']}, batch {gpu['batch_size']}, bf16 {gpu['bf16']}, torch.compile {gpu['compile']}; "
                 f"MFU against the dense {peak['dtype']} matmul peak {peak['flops_per_second'] / 1e12:,.1f} "
                 "TFLOP/s measured in the same run."]
    return "\n".join(rows)
