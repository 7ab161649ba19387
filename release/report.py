"""The run's comparison report: every variant side by side, the gate's decision with each check, and training
curves; one self-contained HTML page (PNG plots embedded as base64, no external resources) and a Markdown
version of the tables for the KFP UI.

Variants are ``release.records.Variant`` records (name, summary, valid and test metrics), the blessing a
``release.records.Blessing``. Relative changes are stated the way the seed states its results: "+1.2% Recall@10"
against the baseline variant.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core import contract, rundir, storage
from release.gate import relative_change
from release.records import METRIC, Blessing, Variant

# (file name, title, x key, y key, x label, y label) of each plot drawn from summary.json's history.
PLOTS = (
    ("valid_recall_vs_steps.png", "Validation Recall@10 vs steps", "step", "valid_recall@10", "step", "Recall@10"),
    ("valid_recall_vs_wallclock.png", "Validation Recall@10 vs wall-clock", "wall_seconds", "valid_recall@10",
     "training seconds", "Recall@10"),
    ("user_norm_vs_steps.png", "Mean user-embedding L2 norm vs steps", "step", "user_norm_mean", "step",
     "mean ||user embedding||"),
)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value, spec: str = ".4f") -> str:
    if value is None:
        return "—"
    number = _float(value)
    return "NaN" if math.isnan(number) else format(number, spec)


def _duration(seconds) -> str:
    s = _float(seconds)
    if math.isnan(s):
        return "—"
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60):02d} s"


def change_text(value: float, reference: float, label: str = "Recall@10") -> str:
    """``+1.2% Recall@10``; an em dash when either side is missing."""
    change = relative_change(value, reference)
    return "—" if math.isnan(change) else f"{change:+.1%} {label}"


def _rows(variants: list[Variant], blessing: Blessing, baseline: str) -> tuple[list[str], list[list[str]]]:
    base = next((v for v in variants if v.name == baseline), None)
    base_valid = base.valid_recall if base else float("nan")
    base_test = base.test_recall if base else float("nan")
    candidate = blessing.candidate.get("name")
    header = ["variant", "valid Recall@10", f"vs {baseline} (valid)", "test Recall@10", f"vs {baseline} (test)",
              "NDCG@10", "MRR", "coverage@10", "user norm mean / p95", "item norm mean", "params", "training time",
              "tokens/s", "steps"]
    rows = []
    for v in variants:
        summary, test = v.summary, v.test
        marker = " ★" if v.name == candidate else ""
        rows.append([
            f"{v.name}{marker}", _fmt(v.valid_recall), change_text(v.valid_recall, base_valid),
            _fmt(test.get(METRIC)), change_text(_float(test.get(METRIC)), base_test),
            _fmt(test.get("ndcg@10")), _fmt(test.get("mrr")), _fmt(test.get("coverage@10"), ".3f"),
            f"{_fmt(test.get('user_norm_mean'), '.1f')} / {_fmt(test.get('user_norm_p95'), '.1f')}",
            _fmt(test.get("item_norm_mean"), ".1f"), _fmt(summary.get("params", test.get("params")), ",.0f"),
            _duration(summary.get("train_seconds")), _fmt(summary.get("tokens_per_second"), ",.0f"),
            _fmt(summary.get("steps"), ",.0f"),
        ])
    return header, rows


def _check_rows(blessing: Blessing) -> tuple[list[str], list[list[str]]]:
    def value(v, percent: bool) -> str:
        if isinstance(v, dict):  # bootstrap: {mean_diff, ci_low, ci_high, users}
            return f"{v['mean_diff']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
        if isinstance(v, list):
            return ", ".join(map(str, v))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return _fmt(v, "+.2%") if percent else _fmt(v, ".4g")
        return "—" if v is None else str(v)

    rows = [[c.name, value(c.value, c.name.startswith("change_")),
             value(c.threshold, c.name.startswith("change_")), "pass" if c.passed else "FAIL", c.reason]
            for c in blessing.checks]
    return ["check", "value", "threshold", "result", "reason"], rows


def _decision(blessing: Blessing) -> str:
    name = blessing.candidate.get("name")
    champion = blessing.champion or {}
    if champion:
        how = "re-evaluated on this run's test split" if champion.get("re_evaluated") else "its metrics stored at push"
        data = "trained on the same data" if champion.get("same_data") else "trained on other data"
        against = f"production champion {champion.get('version')} ({how}; {data})"
    else:
        against = "no production champion yet"
    verdict = "BLESSED" if blessing.blessed else "NOT BLESSED"
    failed = [c.name for c in blessing.checks if not c.passed]
    why = f"; failed: {', '.join(failed)}" if failed else ""
    return f"{verdict}: candidate {name} (best validation Recall@10), gated against {against}{why}"


def plot_png(variants: list[Variant], title: str, x_key: str, y_key: str, x_label: str, y_label: str) -> bytes:
    """One line per variant from summary.json's history (points where both values are finite), as PNG bytes."""
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for v in variants:
        points = [(_float(h.get(x_key)), _float(h.get(y_key))) for h in v.summary.get("history", [])]
        points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if points:
            axes.plot(*zip(*points, strict=True), marker=".", label=v.name.replace("$", r"\$"))  # no mathtext
    axes.set(title=title, xlabel=x_label, ylabel=y_label)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _table(header: list[str], rows: list[list[str]], cell: Callable[[str], str]) -> str:
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:  # Markdown renders inline HTML: escape it like the HTML page does
        return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child,
td:last-child{text-align:left}.pass{color:#17703a}.fail{color:#b00020;font-weight:bold}img{max-width:100%}"""


def write_report(variants: list[Variant], blessing: Blessing, output_html: str, output_markdown: str,
                 plots_dir: str | None = None, baseline: str = "baseline") -> None:
    """Write the HTML page and the Markdown tables (local paths or gs:// URIs); with ``plots_dir`` also each
    plot as a PNG file there. ``baseline`` names the variant relative changes are computed against."""
    header, rows = _rows(variants, blessing, baseline)
    check_header, check_rows = _check_rows(blessing)
    decision = _decision(blessing)
    images = []
    for file_name, *spec in PLOTS:
        png = plot_png(variants, *spec)
        if plots_dir:
            storage.write_bytes(storage.join(plots_dir, file_name), png)
        images.append((spec[0], base64.b64encode(png).decode("ascii")))

    def check_cell(text: str) -> str:
        escaped = html.escape(text)
        return {"pass": '<span class="pass">pass</span>', "FAIL": '<span class="fail">FAIL</span>'}.get(text, escaped)

    verdict_class = "pass" if blessing.blessed else "fail"
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Interest model comparison</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>Interest model comparison</h1>",
        f'<p class="{verdict_class}">{html.escape(decision)}</p>',
        f"<h2>Variants</h2><p>Relative changes against the baseline preset <b>{html.escape(baseline)}</b>; "
        "★ = the candidate selected on validation Recall@10.</p>",
        _table(header, rows, html.escape),
        "<h2>Gate checks</h2>", _table(check_header, check_rows, check_cell),
        "<h2>Training curves</h2>",
        *(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
          for title, data in images),
        "</body></html>",
    ])
    storage.write_text(output_html, page + "\n")
    markdown = "\n\n".join([
        "# Interest model comparison", f"**{decision}**",
        f"## Variants\nRelative changes against the baseline preset `{baseline}`; ★ = the selected candidate.",
        _markdown_table(header, rows), "## Gate checks", _markdown_table(check_header, check_rows),
        "Training curves: see the HTML report" + (f" and the PNG files in `{plots_dir}`." if plots_dir else "."),
    ])
    storage.write_text(output_markdown, markdown + "\n")


def write_report_dir(variants: list[Variant], blessing: Blessing, output_dir: str, baseline: str = "baseline") -> str:
    """Publish ``output_dir`` whole (core.rundir) with report.html, report.md and plots/*.png; returns the path of
    report.html, a real ``.html`` file a browser renders."""
    with rundir.writing(output_dir, contract.REPORT_KIND) as staging:
        write_report(variants, blessing, staging.join(contract.REPORT_HTML), staging.join(contract.REPORT_MARKDOWN),
                     staging.join("plots"), baseline)
    return storage.join(output_dir, contract.REPORT_HTML)
