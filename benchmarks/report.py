"""One Markdown table from the benchmark results (the dicts the benchmarks return and write as JSON)."""

from __future__ import annotations

from typing import Any

HEADER = ("| benchmark | throughput | reference | ours / reference | MFU |\n"
          "|---|---:|---:|---:|---:|")


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


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
    if preprocess:
        rows.append(f"| preprocessing ({preprocess.get('description', 'ML-1M')}) | "
                    f"{_rate(preprocess['rows_per_second'], 'rows/s')} | | | |")
    if evaluation:
        rows.append(f"| full-catalogue evaluation ({evaluation['users']:,} users x {evaluation['items']:,} items) | "
                    f"{_rate(evaluation['users_per_second'], 'users/s')} | | | |")
    return "\n".join(rows + [""] + notes)
