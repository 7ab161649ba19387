"""``interest gate`` -> ``interest push`` -> ``interest report`` on a local registry, and their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core import contract, rundir
from pipelines.cli import main
from tests.support.fake_artifacts import blessing_for, write_data_dir, write_evaluation, write_run


def make_variant(tmp_path: Path, name: str, seed: int, valid_recall: float, hit_rate: float, data: str) -> str:
    model_dir, test_dir = write_run(tmp_path, name, seed, hit_rate, rundir.open_complete(data).content_digest)
    hits = (np.arange(300) < round(valid_recall * 300)).astype(np.float64)
    valid_dir = write_evaluation(Path(model_dir).parent / "eval-valid", Path(model_dir), hits, split="valid",
                                 data_digest=rundir.open_complete(data).content_digest)
    return f"name={name},model={model_dir},valid={valid_dir},test={test_dir}"


def test_gate_push_report_end_to_end(tmp_path, capsys):
    data = write_data_dir(tmp_path)
    variants = [make_variant(tmp_path, "baseline", 1, 0.30, 0.30, data),
                make_variant(tmp_path, "swiglu", 2, 0.31, 0.32, data), make_variant(tmp_path, "rope", 3, 0.29, 0.28, data)]
    registry, blessing = str(tmp_path / "registry"), str(tmp_path / "blessing.json")
    flags = [arg for v in variants for arg in ("--variant", v)]
    policy = ["--set", "min_recall_at_10=0.05"]  # the pipeline's policy: the gate's config, and the push's
    assert main(["gate", *flags, "--registry", registry, "--output", blessing, *policy]) == 0
    decision = json.loads(Path(blessing).read_text())
    assert decision["blessed"] and decision["candidate"]["name"] == "swiglu" and decision["baseline"] == "baseline"
    assert decision["config"]["min_recall_at_10"] == 0.05 and "BLESSED: swiglu" in capsys.readouterr().out

    assert main(["push", "--blessing", blessing, "--registry", registry, "--version", "v1", "--data", data,
                 *policy, "--baseline", "baseline"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "pushed"
    assert main(["push", "--blessing", blessing, "--registry", registry, "--version", "v1", *policy]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "already_pushed"
    # The same blessing for another version is stale now: the champion moved to v1 after it was gated.
    assert main(["push", "--blessing", blessing, "--registry", registry, "--version", "v2", *policy]) == 3
    assert "champion changed, re-gate" in capsys.readouterr().err

    # A new run gates against the champion v1 from the registry.
    assert main(["gate", *flags, "--registry", registry, "--output", blessing]) == 0
    regated = json.loads(Path(blessing).read_text())
    assert regated["champion"]["version"] == "v1" and regated["champion_generation"] == 1
    assert {c["name"]: c["passed"] for c in regated["checks"]}["bootstrap_vs_champion"]
    # The champion re-evaluated on this run's split is what counts; an evaluation of another model is refused.
    rope_eval = str(tmp_path / "rope" / "eval-test")
    assert main(["gate", *flags, "--registry", registry, "--output", blessing, "--champion-eval", rope_eval]) == 2
    assert "given as champion v1's test evaluation) measured a model.pt" in capsys.readouterr().err
    rope_hits = np.asarray(contract.read_per_user(rope_eval)["recall@10"])  # swiglu re-evaluated: worse today
    champion_eval = write_evaluation(tmp_path / "champion-test", tmp_path / "swiglu" / "model", rope_hits,
                                     data_digest=rundir.open_complete(data).content_digest)
    assert main(["gate", *flags, "--registry", registry, "--output", blessing, "--champion-eval", champion_eval]) == 0
    against_fresh = json.loads(Path(blessing).read_text())
    assert against_fresh["champion"]["evaluation"] == champion_eval and against_fresh["champion"]["re_evaluated"]
    change = next(c for c in against_fresh["checks"] if c["name"] == "change_vs_champion")
    assert change["value"] > 0.05  # swiglu (0.32) vs rope (0.28), not vs itself

    capsys.readouterr()
    assert main(["report", *flags, "--blessing", blessing, "--output", str(tmp_path / "report")]) == 0
    html = tmp_path / "report" / "report.html"
    assert capsys.readouterr().out.strip() == str(html)
    assert all(name in html.read_text() for name in ("baseline", "swiglu", "rope"))
    assert (tmp_path / "report" / "report.md").exists()
    assert json.loads((tmp_path / "report" / "comparison.json").read_text())["candidate"] == "swiglu"
    assert len(list((tmp_path / "report" / "plots").glob("*.png"))) == 4  # 3 curves + the unpenalised norm


@pytest.mark.parametrize("flags, message", [
    (["--variant", "name=a"], "name= and model= are required"),
    (["--variant", "name=a,model=/m,color=red"], "keys name, model, valid, test"),
    (["--variant", "name=a,model=/m", "--baseline", "b"], "no variant named 'b'"),
    (["--variant", "name=a,model=/m", "--baseline", "none", "--set", "confidence=2"], "GateConfig.confidence"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, message):
    argv = ["gate", *flags, "--registry", str(tmp_path / "r"), "--output", str(tmp_path / "b.json")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_push_refuses_a_path_escaping_version(tmp_path, capsys):
    model_dir, test_dir = write_run(tmp_path, "m", 1)
    blessing = tmp_path / "blessing.json"
    blessing.write_text(json.dumps(blessing_for(model_dir, test_dir).to_json()))
    argv = ["push", "--blessing", str(blessing), "--registry", str(tmp_path / "r"), "--version", "../../etc"]
    assert main(argv) == 2
    assert "version" in capsys.readouterr().err and not (tmp_path / "r").exists()
