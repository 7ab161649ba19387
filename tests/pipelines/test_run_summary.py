"""What `interest run` prints at the end: every variant's Recall@10, its difference to the baseline with the paired
bootstrap interval and whether it is significant, steps and seconds, and where the results are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.commands.run import print_summary
from pipelines.local_runner import LocalRun
from release.comparison import NOT_SIGNIFICANT, SIGNIFICANT
from release.report import write_report
from tests.support.runs import blessing_of, fake_run


def local_run(comparison: dict, pushed: str | None, production: str | None, candidate: str = "swiglu") -> LocalRun:
    run_dir = Path("/runs/20260101-000000-quick")
    return LocalRun(
        run_dir=run_dir, pipeline_yaml=run_dir / "pipeline.yaml", report_html=run_dir / "report.html",
        report_markdown=run_dir / "report.md", comparison=comparison, log=run_dir / "kfp-local.log",
        tensorboard=run_dir / "tensorboard", candidate_run=candidate, blessed=pushed is not None, blessing={},
        pushed_model=pushed, production_model=production,
    )


def comparison(tmp_path, variants, candidate) -> dict:
    out = tmp_path / f"c-{candidate.name}.json"
    write_report(variants, blessing_of(candidate, variants[0]), str(tmp_path / "r.html"), str(tmp_path / "r.md"),
                 output_json=str(out))
    return json.loads(out.read_text())


def test_table_and_paths(capsys, tmp_path):
    variants = [fake_run("baseline", 0), fake_run("swiglu", 90, 2)]
    print_summary(local_run(comparison(tmp_path, variants, variants[1]), "/runs/registry/interest/m-1",
                            "/runs/registry/interest/m-1"))
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:4] == ["variant", "seeds", "valid", "Recall@10"]
    assert out[2].split()[:5] == ["baseline", "-", f"{variants[0].valid_recall:.4f}", f"{variants[0].test_recall:.4f}",
                                  "reference"]
    swiglu = out[3].split()
    assert swiglu[0] == "swiglu" and swiglu[-2:] == ["<-", "candidate"] and swiglu[7] == SIGNIFICANT
    assert swiglu[-4:-2] == ["500", "97"]  # steps and training seconds beside
    text = "\n".join(out)
    for expected in ("BLESSED (swiglu)", "report:          /runs/20260101-000000-quick/report.html",
                     "tensorboard:     /runs/20260101-000000-quick/tensorboard",
                     "blessed model:   /runs/registry/interest/m-1", "log:             /runs/20260101-000000-quick/"
                     "kfp-local.log"):
        assert expected in text


def test_an_interval_containing_zero_is_not_significant_in_the_html_the_markdown_and_the_terminal(capsys, tmp_path):
    variants = [fake_run("baseline", 0), fake_run("rope", 30, 3, lost=25), fake_run("swiglu", 90, 2)]
    numbers = comparison(tmp_path, variants, variants[2])
    rope = next(v for v in numbers["variants"] if v["name"] == "rope")["test_vs_baseline"]
    assert rope["ci_low"] < 0 < rope["ci_high"] and rope["label"] == NOT_SIGNIFICANT

    page = (tmp_path / "r.html").read_text()
    row = page[page.index("<td>rope</td>"):].split("</tr>", 1)[0]
    assert f"<td>{rope['text']}</td>" in row and f'<span class="nosig">{NOT_SIGNIFICANT}</span>' in row
    markdown_row = next(line for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| rope |"))
    assert f"| {rope['text']} | {NOT_SIGNIFICANT} |" in markdown_row
    print_summary(local_run(numbers, None, None))
    # strip(): kfp.local can leave its indenting print behind after another test's pipeline (shared/PLATFORM.md)
    terminal_row = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("rope "))
    assert rope["text"] in terminal_row and NOT_SIGNIFICANT in terminal_row


def test_replicates_and_unequal_steps_are_visible_in_the_terminal(capsys, tmp_path):
    variants = [fake_run(f"{name}-seed{s}", gain + s, s, name, steps=steps)
                for name, gain, steps in (("baseline", 0, 300), ("wide", 60, 250)) for s in (1, 2)]
    print_summary(local_run(comparison(tmp_path, variants, variants[3]), None, None, candidate="wide-seed2"))
    out = capsys.readouterr().out
    wide = next(line for line in out.splitlines() if line.strip().startswith("wide "))
    assert "1,2" in wide and "±" in wide and wide.endswith("<- candidate (wide-seed2)")
    assert "different numbers of steps" in out


def test_not_blessed_names_the_champion_that_stays(capsys, tmp_path):
    variants = [fake_run("baseline", 0), fake_run("swiglu", 90, 2)]
    numbers = comparison(tmp_path, variants, variants[1])
    print_summary(local_run(numbers, None, "/runs/registry/interest/m-0"))
    out = capsys.readouterr().out
    assert "not blessed (swiglu)" in out
    assert "blessed model:   none (not pushed; the registry's champion stays /runs/registry/interest/m-0)" in out
    print_summary(local_run(numbers, None, None))
    assert "blessed model:   none (not pushed)" in capsys.readouterr().out
    assert np.isfinite(numbers["variants"][1]["test_vs_baseline"]["mean_diff"])
