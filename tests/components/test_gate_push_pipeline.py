"""select_and_gate and push inside a real kfp.local DAG: a loop writes synthetic variants (model dir + evaluation,
with controlled Recall@10 per user), the gate collects them, and push runs only on a blessing.

kfp.local refuses a component called directly with input artifacts, so the components run in a small pipeline
shaped like the real one (ParallelFor -> Collected -> select_and_gate -> If(blessed) -> push). The champion's
evaluation on this run's data is stood in for by its own stored evaluation (the weights here are not a model
``evaluate_champion`` could run). No ``from __future__ import annotations`` here: KFP reads the component
annotations as types.
"""

import json
from pathlib import Path

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import IMAGE
from components.push import push
from components.select_and_gate import select_and_gate

# kfp.local runs every task in this interpreter; it warns that the image name is not a python image.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def synthetic_variant(name: str, valid_recall: float, test_recall: float, data: Input[Dataset], model: Output[Model],
                      evaluation: Output[Artifact]):
    """A variant whose users hit the target for exactly the first ``recall * 200`` users (nested across variants,
    so a better variant never loses a user: the paired bootstrap sees a clean difference), its evaluations naming
    what they measured as trainer.evaluate does."""
    import hashlib
    import json
    import os

    import numpy as np

    from core import contract, rundir

    users = 200  # the component runs from its own source: no module constants
    with rundir.writing(model.path, contract.MODEL_KIND) as staging:
        for file, content in (("model.pt", f"weights of {name}".encode()), ("model_config.json", b"{}"),
                              ("vocab.json", b'{"padding_index": 0, "items": ["a"]}'),
                              ("summary.json", json.dumps({"preset": name, "params": 1000,
                                                           "train_seconds": 1.0}).encode())):
            with open(staging.join(file), "wb") as f:
                f.write(content)
    for split, recall in (("valid", valid_recall), ("test", test_recall)):
        hits = (np.arange(users) < round(recall * users)).astype(np.float64)
        measured = {"model_sha256": hashlib.sha256(f"weights of {name}".encode()).hexdigest(),
                    "data_digest": rundir.open_complete(data.path).content_digest, "split": split,
                    "protocol": "leave_one_out", "items": 1}
        metrics = {"recall@10": float(hits.mean()), "ndcg@10": float(hits.mean()) / 2, "mrr": float(hits.mean()) / 3,
                   "user_norm_mean": 10.0, "params": 1000, "users": users, contract.MEASURED_KEY: measured}
        with rundir.writing(os.path.join(evaluation.path, split), contract.EVALUATION_KIND) as staging:
            with open(staging.join("metrics.json"), "w") as f:
                json.dump(metrics, f)
            contract.write_per_user(staging.join("per_user.parquet"),
                                    {"user_id": [f"u{i}" for i in range(users)],
                                     "user_index": np.arange(users, dtype=np.int64), "recall@10": hits}, measured)
    for artifact in (model, evaluation):
        artifact.metadata.update(run=name, variant=name)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def stats_dir(data: Output[Dataset]):
    import json

    from core import contract, rundir

    with rundir.writing(data.path, contract.DATA_KIND) as staging:
        with open(staging.join("stats.json"), "w") as f:
            json.dump({"users": 200, "items": 50}, f)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def stored_champion_evaluation(registry: str, champion_evaluation: Output[Artifact]):
    """What evaluate_champion writes, with the champion's stored test evaluation standing in for a fresh one."""
    import dataclasses
    import json
    import os

    from core import rundir
    from release.registry import read_champion

    champion = read_champion(registry, "interest")
    os.makedirs(champion_evaluation.path, exist_ok=True)
    if champion is not None:
        rundir.copy_complete(champion.uri, os.path.join(champion_evaluation.path, "test"))
    with open(os.path.join(champion_evaluation.path, "champion_ref.json"), "w") as f:
        json.dump({"champion": dataclasses.asdict(champion) if champion else None}, f)


@dsl.pipeline(name="gate-push")
def gate_push(variants: list[dict], registry: str):
    data = stats_dir()
    champion = stored_champion_evaluation(registry=registry)
    with dsl.ParallelFor(variants) as v:
        # item key `variant`, not `name`: a loop item's `.name` is the channel's own name attribute
        made = synthetic_variant(name=v.variant, valid_recall=v.valid, test_recall=v.test, data=data.outputs["data"])
    decision = select_and_gate(models=dsl.Collected(made.outputs["model"]),
                               evaluations=dsl.Collected(made.outputs["evaluation"]),
                               champion_evaluation=champion.outputs["champion_evaluation"],
                               baseline="baseline", gate_config={})
    with dsl.If(decision.outputs["Output"] == True):  # noqa: E712 - a KFP condition
        push(candidate=decision.outputs["candidate"], candidate_evaluation=decision.outputs["candidate_evaluation"],
             evidence=decision.outputs["evidence"], blessing=decision.outputs["blessing"],
             data=data.outputs["data"], registry=registry, model_name="interest", gate_config={},
             baseline="baseline")


def run(tmp_path: Path, variants: list[dict], registry: Path) -> dict:
    """Run the pipeline; return the select_and_gate task's outputs read back from its artifacts."""
    root = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               workspace_root=str(root / ".workspace"))
    gate_push(variants=variants, registry=str(registry))
    (gate_dir,) = root.glob("*/select-and-gate")
    out = json.loads((gate_dir / "executor_output.json").read_text())
    return {"blessing": json.loads((gate_dir / "blessing").read_text()),
            "blessed": out["parameterValues"]["Output"], "candidate": out["artifacts"]["blessing"]["artifacts"][0][
                "metadata"]["run"],
            "candidate_dir": gate_dir / "candidate", "pushed": any(root.glob("*/push/executor_output.json"))}


def pointer(registry: Path) -> dict | None:
    path = registry / "interest" / "champion.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_first_run_blesses_and_pushes_then_a_worse_run_is_refused(tmp_path):
    registry = tmp_path / "registry"
    first = run(tmp_path, [{"variant": "baseline", "valid": 0.10, "test": 0.10},
                           {"variant": "swiglu", "valid": 0.12, "test": 0.13}], registry)
    assert first["candidate"] == "swiglu"  # best validation Recall@10
    assert first["blessed"] is True and first["pushed"]
    checks = {c["name"]: c for c in first["blessing"]["checks"]}
    assert checks["change_vs_baseline"]["passed"] and checks["change_vs_baseline"]["value"] == pytest.approx(0.3)
    assert checks["change_vs_champion"]["reason"].startswith("skipped")  # no production champion yet
    assert (first["candidate_dir"] / "model.pt").read_bytes() == b"weights of swiglu"
    champion = pointer(registry)
    assert champion["metrics"]["recall@10"] == pytest.approx(0.13)
    assert (registry / champion["path"] / "model.pt").read_bytes() == b"weights of swiglu"

    second = run(tmp_path, [{"variant": "baseline", "valid": 0.06, "test": 0.05},
                            {"variant": "rope", "valid": 0.08, "test": 0.07}], registry)
    assert second["candidate"] == "rope"
    assert second["blessing"]["champion"]["re_evaluated"]
    assert second["blessed"] is False and not second["pushed"]  # dsl.If skipped the push
    failed = {c["name"] for c in second["blessing"]["checks"] if not c["passed"]}
    assert failed == {"change_vs_champion", "bootstrap_vs_champion"}
    assert pointer(registry) == champion  # the production champion stays
