"""The run's comparison report: every variant side by side with how sure each difference is, the write-up's penalty
table, the gate's decision with each check, and training curves; one self-contained HTML page (PNG plots embedded
as base64, no external resources), a Markdown version of the tables for the KFP UI, and ``comparison.json`` (the
numbers of the tables, which ``interest run`` prints as its final table).

The runs are ``release.records.Run`` records (one per trained model; replicates of a variant share its
``variant``), the blessing a ``release.records.Blessing``. Means, intervals and differences are those of one
``release.comparison.Comparison`` (the gate's: the same runs and bootstrap settings give the same numbers); a
difference whose interval contains zero reads "no significant difference" everywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core import contract, rundir, storage
from release.comparison import Bootstrap, Comparison, VariantResult, difference
from release.records import Blessing, Run, number
from release.stats import Interval, relative_change

# (file name, title, x key, y key, x label, y label) of each plot drawn from summary.json's history.
PLOTS = (
    ("valid_recall_vs_steps.png", "Validation Recall@10 vs optimizer steps", "step", "valid_recall@10", "step",
     "validation Recall@10"),
    ("valid_recall_vs_wallclock.png", "Validation Recall@10 vs wall-clock training seconds", "wall_seconds",
     "valid_recall@10", "training seconds (on this machine, under its load)", "validation Recall@10"),
    ("user_norm_vs_steps.png", "Mean user-embedding L2 norm vs steps (validation users)", "step", "user_norm_mean",
     "step", "mean ||user embedding||"),
)
NORM_PLOT = "unpenalised_norm_and_recall.png"

# One look per variant: a colour (tab20's ten strong shades, then its ten light ones), a marker and a line style,
# each cycling at a different length, so no two of the first 60 variants share all three; the baseline is black,
# solid and thick.
PALETTE = [colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]
MARKERS = ("s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "H", "8", "x")  # "o" is the baseline's
LINESTYLES = ("-", "--", "-.", ":")
PENALTY_FIELDS = ("penalty", "penalty_lambda", "penalty_tau")


def _fmt(value, spec: str = ".4f") -> str:
    if value is None:
        return "—"
    number_ = number(value)
    return "NaN" if math.isnan(number_) else format(number_, spec)


def _duration(seconds) -> str:
    s = number(seconds)
    if math.isnan(s):
        return "—"
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60):02d} s"


def change_text(value: float, reference: float, label: str = "Recall@10") -> str:
    """``+1.2% Recall@10``; an em dash when either side is missing."""
    change = relative_change(value, reference)
    return "—" if math.isnan(change) else f"{change:+.1%} {label}"


def interval_text(interval: Interval, spec: str = ".4f") -> str:
    """``0.3036 [0.2981, 0.3091]`` across seeds; the mean alone for one seed."""
    if interval.n < 2 or math.isnan(interval.low):
        return _fmt(interval.mean, spec)
    return f"{_fmt(interval.mean, spec)} [{_fmt(interval.low, spec)}, {_fmt(interval.high, spec)}]"


def _delta_cells(summary: VariantResult, split: str) -> list[str]:
    if summary.is_baseline:
        return ["reference", "—"]
    delta = summary.vs_baseline[split]
    return [delta.text(), delta.label if delta.bootstrap else "—"] if delta else ["—", "—"]


def _steps_text(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "—"
    low, high = min(finite), max(finite)
    return f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"


def _variant_rows(summaries: Sequence[VariantResult], candidate_variant: str | None,
                  baseline: str) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "seeds", "valid Recall@10", f"valid vs {baseline} [95% CI]", "valid significance",
              "test Recall@10", f"test vs {baseline} [95% CI]", "test significance", "NDCG@10", "user norm mean / p95", "params", "steps",
              "training time", "steps/s"]
    rows = []
    for s in summaries:
        seeds = [seed for seed in s.variant.seeds if seed is not None]
        steps = [number(r.summary.get("steps")) for r in s.runs]
        rate = s.summary_mean("steps") / s.summary_mean("train_seconds")
        rows.append([
            f"{s.name}{' ★' if s.name == candidate_variant else ''}",
            ", ".join(map(str, seeds)) if seeds else "—",
            interval_text(s.recall["valid"]), *_delta_cells(s, "valid"),
            interval_text(s.recall["test"]), *_delta_cells(s, "test"),
            _fmt(s.mean("ndcg@10")),
            f"{_fmt(s.mean('user_norm_mean'), '.1f')} / {_fmt(s.mean('user_norm_p95'), '.1f')}",
            _fmt(s.runs[0].params, ",.0f"), _steps_text(steps), _duration(s.summary_mean("train_seconds")),
            _fmt(rate, ".2f"),
        ])
    return header, rows


def _run_rows(summaries: Sequence[VariantResult], candidate: str | None) -> tuple[list[str], list[list[str]]]:
    header = ["run", "variant", "seed", "valid Recall@10", "test Recall@10", "user norm mean", "steps",
              "training time", "tokens/s"]
    rows = [[f"{r.name}{' ★' if r.name == candidate else ''}", s.name, "—" if r.seed is None else str(r.seed),
             _fmt(r.valid_recall), _fmt(r.test_recall), _fmt(r.test.get("user_norm_mean"), ".1f"),
             _fmt(r.summary.get("steps"), ",.0f"), _duration(r.summary.get("train_seconds")),
             _fmt(r.summary.get("tokens_per_second"), ",.0f")]
            for s in summaries for r in s.runs]
    return header, rows


def _penalty_of(run: Run) -> str:
    return str(run.objective.get("penalty", "none"))


def penalty_reference(summaries: Sequence[VariantResult]) -> VariantResult | None:
    """The unpenalised variant penalties are measured against: the baseline when it is unpenalised, else the first
    unpenalised variant; None when the run has no penalised variant or no unpenalised one."""
    if not any(_penalty_of(s.runs[0]) != "none" for s in summaries):
        return None
    unpenalised = [s for s in summaries if _penalty_of(s.runs[0]) == "none"]
    return next((s for s in unpenalised if s.is_baseline), unpenalised[0] if unpenalised else None)


def _penalty_rows(summaries: Sequence[VariantResult], reference: VariantResult,
                  bootstrap: Bootstrap) -> tuple[list[str], list[list[str]]]:
    """The write-up's table: each penalty setting's validation Recall@10 and validation user norm, relative to the
    unpenalised model; only variants that differ from it in the penalty alone."""
    def without_penalty(s: VariantResult) -> dict:
        run = s.runs[0]
        return {"model": dict(run.model_config),
                "objective": {k: v for k, v in run.objective.items() if k not in PENALTY_FIELDS}}

    reference_norm = reference.mean("user_norm_mean", "valid")
    header = ["variant", "penalty", "valid Recall@10", f"vs {reference.name} [95% CI]", "significance",
              "valid user norm",
              f"norm vs {reference.name}"]
    rows = [[reference.name, "none", interval_text(reference.recall["valid"]), "reference", "—",
             interval_text(Interval.across([number(r.valid.get("user_norm_mean")) for r in reference.runs]), ".1f"),
             "reference"]]
    for s in summaries:
        config = s.runs[0].objective
        if s is reference or _penalty_of(s.runs[0]) == "none" or without_penalty(s) != without_penalty(reference):
            continue
        setting = f"{config['penalty']}, λ {number(config.get('penalty_lambda')):g}"
        if config["penalty"] == "hinge":
            tau = number(config.get("penalty_tau"))
            setting += f", τ {tau:.4g} ({tau / reference_norm:.2f} × unpenalised norm)"
        delta = difference(s.runs, reference.runs, "valid", reference.name, bootstrap)
        norm = s.mean("user_norm_mean", "valid")
        rows.append([s.name, setting, interval_text(s.recall["valid"]), delta.text(),
                     delta.label if delta.bootstrap else "—",
                     interval_text(Interval.across([number(r.valid.get("user_norm_mean")) for r in s.runs]), ".1f"),
                     change_text(norm, reference_norm, "norm")])
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


def _decision(blessing: Blessing, summaries: Sequence[VariantResult]) -> str:
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
    group = blessing.candidate.get("variant") or name
    runs = next((len(s.runs) for s in summaries if s.name == group), 1)
    chosen = (f"the best-validated of {runs} seeds of {group}, the variant with the best mean validation Recall@10"
              if runs > 1 else "best validation Recall@10")
    return f"{verdict}: candidate {name} ({chosen}), gated against {against}{why}"


def _selection_note(summaries: Sequence[VariantResult]) -> str:
    if not any(len(s.runs) > 1 for s in summaries):
        return ""
    return ("With replicates the gate still ships one model: the variant with the best mean validation Recall@10 "
            "over its seeds, and of its runs the best-validated one; the gate judges that variant (the mean over "
            "its seeds) against the baseline, the same difference as the table's.")


def _steps_note(variants: Sequence[Run]) -> str:
    steps = [number(v.summary.get("steps")) for v in variants]
    finite = [s for s in steps if math.isfinite(s)]
    if finite and min(finite) != max(finite):
        return (f"Runs trained different numbers of optimizer steps ({min(finite):,.0f} to {max(finite):,.0f}): a "
                "difference mixes the variants with how many steps each got.")
    return f"Every run trained {finite[0]:,.0f} optimizer steps." if finite else ""


# ----------------------------------------------------------------------------------------------------- plots


def _look(index: int, is_baseline: bool) -> dict[str, Any]:
    if is_baseline:
        return {"color": "black", "linestyle": "-", "marker": "o", "linewidth": 3.0, "markersize": 6, "zorder": 10}
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)], "linewidth": 1.6, "markersize": 5, "zorder": 3}


def curve(runs: Sequence[Run], x_key: str, y_key: str) -> tuple[list[float], list[float], list[float],
                                                                      list[float]]:
    """(x, mean y, min y, max y) over a variant's seeds at the validation steps every seed has, where every value is
    finite; x is the mean over seeds too (wall-clock seconds differ by seed)."""
    by_step: dict[float, list[tuple[float, float]]] = {}
    for run in runs:
        for point in run.summary.get("history", []):
            x, y = number(point.get(x_key)), number(point.get(y_key))
            if math.isfinite(x) and math.isfinite(y):
                by_step.setdefault(number(point.get("step")), []).append((x, y))
    points = [(sum(x for x, _ in v) / len(v), [y for _, y in v]) for _, v in sorted(by_step.items())
              if len(v) == len(runs)]
    points.sort(key=lambda p: p[0])
    return ([x for x, _ in points], [sum(ys) / len(ys) for _, ys in points], [min(ys) for _, ys in points],
            [max(ys) for _, ys in points])


def _label(summary: VariantResult) -> str:
    name = summary.name.replace("$", r"\$")  # no mathtext
    seeds = f" ({len(summary.runs)} seeds)" if len(summary.runs) > 1 else ""
    role = " (baseline)" if summary.is_baseline and summary.name != "baseline" else ""
    return f"{name}{role}{seeds}"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def plot_png(summaries: Sequence[VariantResult], title: str, x_key: str, y_key: str, x_label: str,
             y_label: str) -> bytes:
    return _png(plot_figure(summaries, title, x_key, y_key, x_label, y_label))


def plot_figure(summaries: Sequence[VariantResult], title: str, x_key: str, y_key: str, x_label: str,
                y_label: str) -> Figure:
    """One line per variant (mean over its seeds, their range shaded), each with its own colour, marker and line
    style, the baseline black and thick, the legend beside the axes (never over the curves)."""
    figure = Figure(figsize=(12, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    others = 0
    for summary in summaries:
        look = _look(others, summary.is_baseline)
        others += not summary.is_baseline
        x, y, low, high = curve(summary.runs, x_key, y_key)
        if not x:
            continue
        axes.plot(x, y, label=_label(summary), **look)
        if len(summary.runs) > 1:
            axes.fill_between(x, low, high, color=look["color"], alpha=0.12, linewidth=0)
    axes.set_title(title, fontsize=13)
    axes.set_xlabel(x_label, fontsize=11)
    axes.set_ylabel(y_label, fontsize=11)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False,
                    ncols=1 if len(axes.lines) <= 24 else 2)
    return figure


def norm_plot_png(summary: VariantResult) -> bytes:
    """The write-up's phenomenon for the unpenalised model: validation Recall@10 and the mean user-embedding norm
    against steps on two axes (the norm keeps growing after recall levels off)."""
    figure = Figure(figsize=(12, 6), dpi=100, layout="constrained")
    recall_axes = figure.add_subplot()
    norm_axes = recall_axes.twinx()
    for axes, key, color, marker, label in (
            (recall_axes, "valid_recall@10", "tab:blue", "o", "validation Recall@10"),
            (norm_axes, "user_norm_mean", "tab:red", "s", "mean ||user embedding|| (validation users)")):
        x, y, low, high = curve(summary.runs, "step", key)
        axes.plot(x, y, color=color, marker=marker, linewidth=2.2, label=label)
        if len(summary.runs) > 1:
            axes.fill_between(x, low, high, color=color, alpha=0.12, linewidth=0)
        axes.set_ylabel(label, color=color, fontsize=11)
        axes.tick_params(axis="y", colors=color)
    recall_axes.set_xlabel("step", fontsize=11)
    recall_axes.grid(alpha=0.3)
    recall_axes.set_title(f"Unpenalised {summary.name}: user-embedding norm and validation Recall@10 vs steps",
                          fontsize=13)
    return _png(figure)


# ------------------------------------------------------------------------------------------------ the page


def _table(header: list[str], rows: list[list[str]], cell: Callable[[str], str], table_id: str = "") -> str:
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:  # Markdown renders inline HTML: escape it like the HTML page does
        return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
td:first-child,th:first-child,#runs td:nth-child(2),#penalties td:nth-child(2){text-align:left}
#checks td:last-child{text-align:left;white-space:normal}
.scroll{overflow-x:auto}.pass,.sig{color:#17703a}.fail{color:#b00020;font-weight:bold}.nosig{color:#777}
figure{margin:1.5em 0}img{max-width:100%}p.note{color:#555;max-width:60em}"""
CELL_CLASSES = {"pass": "pass", "FAIL": "fail", "significant": "sig", "no significant difference": "nosig"}


def _html_cell(text: str) -> str:
    escaped = html.escape(text)
    return f'<span class="{CELL_CLASSES[text]}">{escaped}</span>' if text in CELL_CLASSES else escaped


def comparison_json(comparison: Comparison, blessing: Blessing) -> dict[str, Any]:
    """What ``comparison.json`` holds: the comparison's numbers and the gate's verdict."""
    return {**comparison.to_json(), "blessed": blessing.blessed}


def write_report(runs: Sequence[Run], blessing: Blessing, output_html: str, output_markdown: str,
                 plots_dir: str | None = None, baseline: str = "baseline", output_json: str | None = None,
                 plots_label: str | None = None) -> None:
    """Write the HTML page and the Markdown tables (local paths or gs:// URIs); with ``plots_dir`` also each
    plot as a PNG file there (the Markdown names it ``plots_label``, e.g. the artifact's URI, or ``plots_dir``),
    with ``output_json`` the tables' numbers. ``baseline`` names the variant differences
    are measured against; the bootstrap uses the blessing's settings (the gate's ``Comparison``)."""
    bootstrap = Bootstrap.of(blessing.config or {})
    resamples, confidence = bootstrap.resamples, bootstrap.confidence
    comparison = Comparison.of(runs, baseline, bootstrap)
    summaries = comparison.variants
    candidate_variant = blessing.candidate.get("variant") or blessing.candidate.get("name")
    header, rows = _variant_rows(summaries, candidate_variant, baseline)
    tables: list[tuple[str, str, list[str], list[list[str]]]] = [("variants", "Variants", header, rows)]
    if any(len(s.runs) > 1 for s in summaries):
        tables.append(("runs", "Runs (one per seed)", *_run_rows(summaries, blessing.candidate.get("name"))))
    reference = penalty_reference(summaries)
    if reference is not None:
        tables.append(("penalties", "User-norm penalties (the write-up's table, on the validation split)",
                       *_penalty_rows(summaries, reference, bootstrap)))
    check_header, check_rows = _check_rows(blessing)
    decision = _decision(blessing, summaries)
    images = []
    for file_name, *spec in PLOTS:
        images.append((file_name, spec[0], plot_png(summaries, *spec)))
    if reference is not None or any(s.is_baseline for s in summaries):
        unpenalised = reference or next(s for s in summaries if s.is_baseline)
        images.append((NORM_PLOT, f"Unpenalised {unpenalised.name}: user norm and Recall@10 vs steps",
                       norm_plot_png(unpenalised)))
    for file_name, _, png in images:
        if plots_dir:
            storage.write_bytes(storage.join(plots_dir, file_name), png)

    has_baseline = any(s.is_baseline for s in summaries)

    def intro(bold: Callable[[str], str], italic: Callable[[str], str]) -> str:
        star = "★ = the variant of the selected candidate."
        if not has_baseline:
            return f"No variant named {bold(baseline)}: no differences to show. {star}"
        return (f"Differences against {bold(baseline)}: paired over users (by user_id), per user the mean over a "
                f"variant's seeds, as a relative change of the means; {confidence:.0%} percentile bootstrap over "
                f"users ({resamples} resamples, one resample applied within every seed, the ratio taken within each "
                f"resample). The gate judges the candidate's variant by the same numbers. An interval containing "
                f"zero is "
                f"{italic('no significant difference')}. Recall@10 cells show the mean over seeds and, with several "
                f"seeds, its {confidence:.0%} t-interval across seeds. {star}")

    notes = [n for n in (_steps_note(runs), _selection_note(summaries)) if n]
    sections = []
    for table_id, title, head, body in tables:
        sections.append(f"<h2>{html.escape(title)}</h2>")
        if table_id == "variants":
            sections += [f'<p class="note">{intro(lambda t: f"<b>{html.escape(t)}</b>", lambda t: f"<i>{t}</i>")}</p>',
                         *(f'<p class="note">{html.escape(n)}</p>' for n in notes)]
        sections.append(_table(head, body, _html_cell, table_id))
    verdict_class = "pass" if blessing.blessed else "fail"
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Interest model comparison</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>Interest model comparison</h1>",
        f'<p class="{verdict_class}" id="decision">{html.escape(decision)}</p>',
        *sections,
        "<h2>Gate checks</h2>", _table(check_header, check_rows, _html_cell, "checks"),
        "<h2>Training curves</h2>",
        *(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
          f"<figcaption>{html.escape(title)}</figcaption></figure>" for _, title, png in images),
        "</body></html>",
    ])
    storage.write_text(output_html, page + "\n")
    markdown = ["# Interest model comparison", f"**{decision}**"]
    for table_id, title, head, body in tables:
        markdown.append(f"## {title}")
        if table_id == "variants":
            markdown += [intro(lambda t: f"`{t}`", lambda t: f"*{t}*"), *notes]
        markdown.append(_markdown_table(head, body))
    markdown += ["## Gate checks", _markdown_table(check_header, check_rows),
                 "Training curves: see the HTML report"
                 + (f" and the PNG files in `{plots_label or plots_dir}`." if plots_dir else ".")]
    storage.write_text(output_markdown, "\n\n".join(markdown) + "\n")
    if output_json:
        storage.write_json(output_json, comparison_json(comparison, blessing))


def write_report_dir(runs: Sequence[Run], blessing: Blessing, output_dir: str, baseline: str = "baseline",
                     overwrite: bool = False) -> str:
    """Publish ``output_dir`` whole (core.rundir) with report.html, report.md, comparison.json and plots/*.png;
    returns the path of report.html, a real ``.html`` file a browser renders. ``overwrite``: replace whatever
    ``output_dir`` holds (else only an earlier report)."""
    with rundir.writing(output_dir, contract.REPORT_KIND, overwrite=overwrite) as staging:
        write_report(runs, blessing, staging.join(contract.REPORT_HTML), staging.join(contract.REPORT_MARKDOWN),
                     staging.join("plots"), baseline, staging.join(contract.REPORT_COMPARISON))
    return storage.join(output_dir, contract.REPORT_HTML)

