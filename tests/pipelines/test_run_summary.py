"""What `interest run` prints at the end: every variant's Recall@10 and where the results are."""

from __future__ import annotations

from pathlib import Path

from pipelines.commands.run import print_summary
from pipelines.local_runner import LocalRun


def local_run(pushed: str | None, production: str | None) -> LocalRun:
    run_dir = Path("/runs/20260101-000000-quick")
    return LocalRun(
        run_dir=run_dir, pipeline_yaml=run_dir / "pipeline.yaml", report_html=run_dir / "report.html",
        report_markdown=run_dir / "report.md", tensorboard=run_dir / "tensorboard",
        recall={"baseline": {"valid": 0.2101, "test": 0.2003}, "swiglu": {"valid": 0.2154, "test": 0.1999}},
        candidate="swiglu", blessed=pushed is not None, blessing={}, pushed_model=pushed, production_model=production,
    )


def test_table_and_paths(capsys):
    print_summary(local_run("/runs/registry/interest/m-1", "/runs/registry/interest/m-1"))
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["variant", "valid", "Recall@10", "test", "Recall@10"]
    assert out[2].split() == ["baseline", "0.2101", "0.2003"]
    assert out[3].split() == ["swiglu", "0.2154", "0.1999", "<-", "candidate"]
    text = "\n".join(out)
    for expected in ("BLESSED (swiglu)", "report:          /runs/20260101-000000-quick/report.html",
                     "tensorboard:     /runs/20260101-000000-quick/tensorboard",
                     "blessed model:   /runs/registry/interest/m-1"):
        assert expected in text


def test_not_blessed_names_the_champion_that_stays(capsys):
    print_summary(local_run(None, "/runs/registry/interest/m-0"))
    out = capsys.readouterr().out
    assert "not blessed (swiglu)" in out
    assert "blessed model:   none (not pushed; the registry's champion stays /runs/registry/interest/m-0)" in out
    print_summary(local_run(None, None))
    assert "blessed model:   none (not pushed)" in capsys.readouterr().out
