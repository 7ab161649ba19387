"""The report as a person sees it: opened from disk in a real headless Chromium, its rendered DOM has the title,
one variants row per variant, every gate check and every plot loaded (skipped, saying why, without Chromium)."""

from __future__ import annotations

from release.report import PLOTS, write_report_dir
from tests.support.browser import chromium_or_skip, render_report
from tests.support.runs import blessing_of, fake_run


def test_report_renders_in_a_real_browser(tmp_path):
    chromium_or_skip()
    runs = [fake_run(f"{name}-seed{seed}", gained + seed, seed, name) for name, gained in
            (("baseline", 0), ("swiglu", 80), ("rope & <co>", 2)) for seed in (1, 2)]
    blessing = blessing_of(runs[3], runs[1])
    page = tmp_path / "report"
    path = write_report_dir(runs, blessing, str(page))
    assert path.endswith("/report.html")  # a real .html file: a browser renders it instead of showing its source

    dom = render_report(path)
    assert dom["title"] == dom["heading"] == "Interest model comparison"
    assert dom["decision"].startswith("BLESSED: candidate swiglu-seed2")
    assert [row[0] for row in dom["variants"]] == ["baseline", "swiglu ★", "rope & <co>"]  # one row per variant
    header = dom["variantHeader"]
    swiglu = dict(zip(header, dom["variants"][1], strict=True))
    assert swiglu["seeds"] == "1, 2" and "[" in swiglu["test Recall@10"] and swiglu["test significance"]
    assert [row[0] for row in dom["checks"]] == [c.name for c in blessing.checks]
    assert all(row[3] in ("pass", "FAIL") for row in dom["checks"])
    assert dom["images"] == len(PLOTS) + 1 and dom["imagesLoaded"] == dom["images"]
    assert min(dom["imageWidths"]) >= 1000  # one figure per metric at a readable size
