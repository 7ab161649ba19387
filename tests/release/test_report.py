"""The comparison report renders: well-formed self-contained HTML with one row per variant, intervals across seeds
and paired differences with their significance, the write-up's penalty table, embedded PNG plots that stay readable
with 13+ variants, the gate's checks, a Markdown twin and comparison.json."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from release.comparison import NOT_SIGNIFICANT, SIGNIFICANT, Comparison
from release.report import PLOTS, change_text, plot_figure, write_report
from tests.support.runs import blessing_of, fake_run

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Checks that tags nest properly; collects each table's rows (cells as text), image sources and external
    references."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.external, self.errors = [], [], [], []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v and "://" in v]
        if tag == "table":
            self._table = attrs.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")
        if tag in ("td", "th"):
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr":
            self.tables[self._table].append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> dict[str, list[str]]:
        """Body rows of a table by their first cell."""
        return {row[0]: row for row in self.tables[table][1:]}


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_change_text_is_in_the_seeds_form():
    assert change_text(0.3036, 0.30) == "+1.2% Recall@10"
    assert change_text(0.2979, 0.30) == "-0.7% Recall@10"
    assert change_text(float("nan"), 0.30) == "—"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    variants = [fake_run("baseline", 0), fake_run("swiglu", 90, 2), fake_run("<b>rope & co</b>", 30, 3, norm=float("nan"), lost=25)]
    blessing = blessing_of(variants[1], variants[0])
    paths = {"html": tmp_path / "report.html", "md": tmp_path / "report.md", "plots": tmp_path / "plots",
             "json": tmp_path / "comparison.json"}
    write_report(variants, blessing, str(paths["html"]), str(paths["md"]), str(paths["plots"]),
                 output_json=str(paths["json"]))
    return variants, blessing, paths


def test_html_parses_is_self_contained_and_shows_every_variant_and_check(report):
    variants, blessing, paths = report
    text = paths["html"].read_text()
    page = parse(text)
    assert page.errors == [] and page.stack == [] and page.external == []
    rows = page.rows("variants")
    assert list(rows) == ["baseline", "swiglu ★", "<b>rope & co</b>"]  # one row each; names escaped, not markup
    assert "<b>rope" not in text
    header = page.tables["variants"][0]
    swiglu = dict(zip(header, rows["swiglu ★"], strict=True))
    assert swiglu["test vs baseline [95% CI]"].startswith("+20.") and swiglu["test significance"] == SIGNIFICANT
    rope = dict(zip(header, rows["<b>rope & co</b>"], strict=True))
    assert rope["test significance"] == NOT_SIGNIFICANT and rope["valid significance"] == NOT_SIGNIFICANT
    assert rope["user norm mean / p95"] == "NaN / 120.0"  # a NaN norm is shown as NaN, never hidden
    assert rows["baseline"][3] == "reference" and "Every run trained 500 optimizer steps." in text
    assert [row[0] for row in page.tables["checks"][1:]] == [c.name for c in blessing.checks]
    assert "BLESSED: candidate swiglu" in text and "runs" not in page.tables  # no replicates: no runs table
    assert len(page.images) == len(PLOTS) + 1  # and the unpenalised norm-vs-recall figure
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_markdown_and_json_carry_the_same_numbers(report):
    variants, blessing, paths = report
    markdown = paths["md"].read_text()
    assert markdown.startswith("# Interest model comparison")
    for name in ("baseline", "swiglu ★", "&lt;b&gt;rope &amp; co&lt;/b&gt;"):
        assert f"| {name} |" in markdown
    assert all(f"| {c.name} |" in markdown for c in blessing.checks)
    comparison = json.loads(paths["json"].read_text())
    assert comparison["candidate"] == "swiglu" and comparison["equal_steps"] is True
    by_name = {v["name"]: v for v in comparison["variants"]}
    assert by_name["swiglu"]["test_vs_baseline"]["label"] == SIGNIFICANT
    assert by_name["swiglu"]["test_vs_baseline"]["text"] in markdown
    assert by_name["baseline"]["test_vs_baseline"] is None


def test_replicates_show_intervals_across_seeds_and_a_row_per_run(tmp_path):
    variants = [fake_run(f"{name}-seed{s}", gained + 5 * s, s, name) for name, gained in (("baseline", 0),
                                                                                         ("dff-2x", 60))
                for s in (1, 2, 3)]
    write_report(variants, blessing_of(variants[4], variants[0]), str(tmp_path / "r.html"), str(tmp_path / "r.md"),
                 output_json=str(tmp_path / "c.json"))
    page = parse((tmp_path / "r.html").read_text())
    rows = page.rows("variants")
    assert list(rows) == ["baseline", "dff-2x ★"]
    header = page.tables["variants"][0]
    dff = dict(zip(header, rows["dff-2x ★"], strict=True))
    assert dff["seeds"] == "1, 2, 3"
    mean, interval = dff["test Recall@10"].split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(", "))
    assert low < float(mean) < high
    assert list(page.rows("runs")) == ["baseline-seed1", "baseline-seed2", "baseline-seed3", "dff-2x-seed1",
                                       "dff-2x-seed2 ★", "dff-2x-seed3"]
    assert "best-validated of 3 seeds of dff-2x" in (tmp_path / "r.html").read_text()
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert comparison["variants"][1]["test_recall@10"]["n"] == 3 and comparison["variants"][1]["seeds"] == [1, 2, 3]


def test_penalty_table_reproduces_the_writeups_rows_relative_to_no_penalty(tmp_path):
    variants = [fake_run("baseline", 0, norm=300.0),
                fake_run("l2-1e-4", -2, 1, norm=250.0, penalty={"penalty": "l2", "penalty_lambda": 1e-4}),
                fake_run("hinge", -30, 2, norm=160.0,
                        penalty={"penalty": "hinge", "penalty_lambda": 1e-3, "penalty_tau": 159.0}),
                fake_run("best", 40, 3, norm=240.0, penalty={"penalty": "l2", "penalty_lambda": 1e-4},
                        model={"mlp": "swiglu"}),  # differs in more than its penalty: not a row of this table
                fake_run("rope", 5, 4, norm=290.0, model={"position": "rope"})]
    write_report(variants, blessing_of(variants[3], variants[0]), str(tmp_path / "r.html"), str(tmp_path / "r.md"))
    page = parse((tmp_path / "r.html").read_text())
    rows = page.rows("penalties")
    assert list(rows) == ["baseline", "l2-1e-4", "hinge"]
    assert rows["l2-1e-4"][1] == "l2, λ 0.0001" and rows["l2-1e-4"][6] == "-16.7% norm"
    assert rows["hinge"][1] == "hinge, λ 0.001, τ 159 (0.53 × unpenalised norm)"
    assert rows["hinge"][4] == SIGNIFICANT and rows["l2-1e-4"][4] == NOT_SIGNIFICANT
    assert "User-norm penalties" in (tmp_path / "r.md").read_text()


def test_unequal_steps_are_called_out(tmp_path):
    variants = [fake_run("baseline", 0, steps=341), fake_run("rope", 0, 1, steps=210)]
    write_report(variants, blessing_of(variants[0], variants[0]), str(tmp_path / "r.html"), str(tmp_path / "r.md"))
    assert "different numbers of optimizer steps (210 to 341)" in (tmp_path / "r.html").read_text()
    assert "different numbers of optimizer steps (210 to 341)" in (tmp_path / "r.md").read_text()


def test_plots_stay_readable_with_13_variants(tmp_path):
    variants = [fake_run("baseline", 0)] + [fake_run(f"variant-{i:02d}", i, i) for i in range(1, 14)]
    for file_name, *spec in PLOTS:
        figure = plot_figure(Comparison.of(variants, "baseline").variants, *spec)
        axes = figure.axes[0]
        lines = axes.get_lines()
        assert len(lines) == 14, file_name
        looks = [(str(line.get_color()), line.get_marker(), line.get_linestyle()) for line in lines]
        assert len({color for color, _, _ in looks}) == 14 and len({marker for _, marker, _ in looks}) == 14
        assert len({style for _, _, style in looks}) == 4
        baseline = next(line for line in lines if line.get_label() == "baseline")
        assert baseline.get_color() == "black" and baseline.get_linewidth() > max(
            line.get_linewidth() for line in lines if line is not baseline)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        legend = axes.get_legend().get_window_extent(renderer)
        assert legend.x0 >= axes.get_window_extent(renderer).x1  # beside the axes, never over the curves
        assert figure.get_size_inches()[0] >= 10
