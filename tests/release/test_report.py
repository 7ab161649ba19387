"""The comparison report renders: well-formed self-contained HTML with every variant, embedded PNG plots, the
gate's checks, relative changes in the seed's form, and a Markdown twin."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.image import imread

from release.gate import GateConfig, gate_checks
from release.records import Blessing, Variant
from release.report import change_text, write_report

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Checks that tags nest properly and collects table cells, image sources and external references."""

    def __init__(self):
        super().__init__()
        self.stack, self.cells, self.images, self.external, self.errors = [], [], [], [], []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v and "://" in v]
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")
        if tag in ("td", "th"):
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def history(final: float, steps: int = 5) -> list[dict]:
    return [{"step": 100 * i, "wall_seconds": 30.0 * i, "train_loss": 5.0 - i, "valid_recall@10": final * i / steps,
             "valid_ndcg@10": final / 2, "user_norm_mean": 10.0 + 20 * i} for i in range(1, steps + 1)]


def variant(name: str, valid: float, test: float, seed: int, norm: float = 80.0) -> Variant:
    hits = (np.random.default_rng(seed).random(400) < test).astype(float)
    return Variant(name, f"/m/{name}", None, f"/e/{name}",
                   {"params": 120_000 + seed, "train_seconds": 95.0 + seed, "tokens_per_second": 48_000.0,
                    "steps": 500, "history": history(valid)},
                   {"recall@10": valid},
                   {"recall@10": float(hits.mean()), "ndcg@10": 0.15, "mrr": 0.12, "coverage@10": 0.4,
                    "user_norm_mean": norm, "user_norm_p95": 120.0, "item_norm_mean": 3.0, "params": 120_000},
                   {"user_id": np.arange(400), "recall@10": hits})


def blessing_of(candidate: Variant, baseline: Variant) -> Blessing:
    """The gate's blessing of ``candidate`` (its checks; no files to bind here)."""
    checks = gate_checks(candidate, baseline, None, GateConfig())
    return Blessing(all(c.passed for c in checks), {"name": candidate.name}, dict(candidate.test), baseline.name,
                    None, 0, checks, {}, {}, {}, "2026-12-01T00:00:00+00:00")


def test_change_text_is_in_the_seeds_form():
    assert change_text(0.3036, 0.30) == "+1.2% Recall@10"
    assert change_text(0.2979, 0.30) == "-0.7% Recall@10"
    assert change_text(float("nan"), 0.30) == "—"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    variants = [variant("baseline", 0.30, 0.30, 1), variant("swiglu", 0.3036, 0.31, 2),
                variant("<b>rope & co</b>", 0.29, 0.28, 3, norm=float("nan"))]
    blessing = blessing_of(variants[1], variants[0])
    paths = {"html": tmp_path / "report.html", "md": tmp_path / "report.md", "plots": tmp_path / "plots"}
    write_report(variants, blessing, str(paths["html"]), str(paths["md"]), str(paths["plots"]))
    return variants, blessing, paths


def test_html_parses_is_self_contained_and_shows_every_variant_and_check(report):
    variants, blessing, paths = report
    text = paths["html"].read_text()
    page = Page()
    page.feed(text)
    page.close()
    assert page.errors == [] and page.stack == [] and page.external == []
    for v in variants:
        assert any(cell.startswith(v.name) for cell in page.cells), v.name
    assert "<b>rope" not in text  # names are escaped, not markup
    assert "swiglu ★" in page.cells and "+1.2% Recall@10" in page.cells
    assert "NaN / 120.0" in page.cells  # a NaN norm is shown as NaN, never hidden
    for check in blessing.checks:
        assert check.name in page.cells
    assert "BLESSED: candidate swiglu" in text
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_plots_are_written_and_draw_every_variant(report):
    _, _, paths = report
    files = sorted(p.name for p in paths["plots"].iterdir())
    assert files == ["user_norm_vs_steps.png", "valid_recall_vs_steps.png", "valid_recall_vs_wallclock.png"]
    pixels = imread(io.BytesIO((paths["plots"] / "valid_recall_vs_steps.png").read_bytes()))[..., :3]
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C)):  # matplotlib's first three lines
        assert (np.abs(pixels * 255 - np.array(color)).sum(axis=-1) < 30).sum() > 50, color


def test_markdown_has_the_same_tables(report):
    variants, blessing, paths = report
    markdown = paths["md"].read_text()
    assert markdown.startswith("# Interest model comparison")
    assert "| variant | valid Recall@10 |" in markdown and "+1.2% Recall@10" in markdown
    for name in ("baseline", "swiglu ★", "&lt;b&gt;rope &amp; co&lt;/b&gt;"):
        assert f"| {name} |" in markdown
    assert all(f"| {c.name} |" in markdown for c in blessing.checks)
