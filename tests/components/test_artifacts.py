"""The helpers component bodies share, and each component's typed interface."""

from __future__ import annotations

import math

import pytest
from kfp import dsl

from components import artifacts
from components.evaluate import evaluate
from components.evaluate_champion import evaluate_champion
from components.image import IMAGE
from components.preprocess import preprocess
from components.push import push
from components.report import report
from components.select_and_gate import select_and_gate
from components.train import train

COMPONENTS = (preprocess, train, evaluate, evaluate_champion, select_and_gate, push, report)


def test_numbers_flattens_and_keeps_only_finite_numbers(caplog):
    values = {"users": 943, "ratio": 0.5, "ok": True, "name": "x", "nan": math.nan, "inf": -math.inf,
              "sequence_length": {"p50": 20, "max": 700}, "reasons": {}}
    assert artifacts.numbers(values) == {"users": 943.0, "ratio": 0.5, "sequence_length.p50": 20.0,
                                         "sequence_length.max": 700.0}
    assert "nan" in caplog.text and "inf" in caplog.text


def test_log_metrics_writes_a_kfp_metrics_artifact():
    metrics = dsl.Metrics(name="metrics", uri="/tmp/unused", metadata={})
    logged = artifacts.log_metrics(metrics, {"recall@10": 0.25, "norm": {"mean": 3}}, prefix="test.")
    assert metrics.metadata == logged == {"test.recall@10": 0.25, "test.norm.mean": 3.0}


def artifact(run: str | None, uri: str) -> dsl.Artifact:
    model = dsl.Model(name="model", uri=uri, metadata={})
    if run is not None:
        artifacts.tag(model, run, run.partition("-seed")[0], None)
    return model


def test_by_run_maps_names_and_refuses_ambiguity():
    found = artifacts.by_run([artifact("swiglu-seed1", "/b"), artifact("baseline", "/a")], "model")
    assert {k: v.uri for k, v in found.items()} == {"swiglu-seed1": "/b", "baseline": "/a"}
    with pytest.raises(ValueError, match="two model artifacts for run 'rope'"):
        artifacts.by_run([artifact("rope", "/a"), artifact("rope", "/b")], "model")
    with pytest.raises(ValueError, match="no 'run'"):
        artifacts.by_run([artifact(None, "/a")], "model")


def test_identity_reads_run_variant_and_seed_as_kfp_hands_them_back():
    assert artifacts.identity({"run": "swiglu-seed3", "variant": "swiglu", "seed": 3.0}) == {
        "name": "swiglu-seed3", "variant": "swiglu", "seed": 3}
    assert artifacts.identity({"run": "rope", "variant": "rope", "seed": -1}) == {"name": "rope", "variant": "rope",
                                                                                  "seed": None}
    # Artifacts written before runs had their own key: the run's name under "variant", the variant's beside it.
    assert artifacts.identity({"variant": "swiglu-seed3", "variant_name": "swiglu", "seed": 3}) == {
        "name": "swiglu-seed3", "variant": "swiglu", "seed": 3}
    assert artifacts.identity({"variant": "old"}) == {"name": "old", "variant": "old", "seed": None}


def test_move_tensorboard_leaves_the_model_without_logs(tmp_path):
    model, board = tmp_path / "model", tmp_path / "board"
    (model / "tensorboard").mkdir(parents=True)
    (model / "tensorboard" / "events.out.tfevents.1").write_bytes(b"e")
    (model / "model.pt").write_bytes(b"w")
    artifacts.move_tensorboard(str(model), str(board), "swiglu")
    assert sorted(p.name for p in model.iterdir()) == ["model.pt"]
    assert (board / "swiglu" / "events.out.tfevents.1").read_bytes() == b"e"
    with pytest.raises(FileNotFoundError, match="no TensorBoard logs"):
        artifacts.move_tensorboard(str(model), str(board), "swiglu")


def test_set_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        artifacts.set_torch_threads(1)
        assert torch.get_num_threads() == 1
        artifacts.set_torch_threads(0)  # 0: leave torch's default alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def io(component) -> tuple[dict[str, str], dict[str, str]]:
    spec = component.component_spec
    kind = {name: getattr(s, "type", None) for name, s in (spec.inputs or {}).items()}
    outs = {name: getattr(s, "type", None) for name, s in (spec.outputs or {}).items()}
    return kind, outs


def test_component_interfaces():
    assert io(preprocess)[1] == {"data": "system.Dataset@0.0.1", "stats": "system.Metrics@0.0.1"}
    assert io(train)[1] == {"model": "system.Model@0.0.1", "tensorboard": "system.Artifact@0.0.1",
                            "metrics": "system.Metrics@0.0.1"}
    assert io(evaluate)[1] == {"metrics": "system.Metrics@0.0.1", "evaluation": "system.Artifact@0.0.1"}
    inputs, outputs = io(select_and_gate)
    assert inputs["models"] == "system.Model@0.0.1" and select_and_gate.component_spec.inputs["models"].is_artifact_list
    assert inputs["champion_evaluation"] == "system.Artifact@0.0.1"
    assert outputs == {"Output": "Boolean", "candidate": "system.Model@0.0.1",
                       "candidate_evaluation": "system.Artifact@0.0.1", "evidence": "system.Artifact@0.0.1",
                       "blessing": "system.Artifact@0.0.1", "metrics": "system.Metrics@0.0.1"}
    assert io(evaluate_champion)[1] == {"champion_evaluation": "system.Artifact@0.0.1"}
    assert io(report)[1] == {"html": "system.HTML@0.0.1", "markdown": "system.Markdown@0.0.1",
                             "comparison": "system.Artifact@0.0.1", "plots": "system.Artifact@0.0.1"}
    # Resource field names would be overwritten by KFP's resource placeholders (cpu_request, accelerator_count...).
    reserved = {"cpu_request", "cpu_limit", "memory_request", "memory_limit", "accelerator_type",
                "accelerator_count", "base_image"}
    for component in COMPONENTS:
        assert not reserved & set(io(component)[0]), component.name


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_components_run_on_the_project_image_without_installing_kfp(component):
    container = component.component_spec.implementation.container
    assert container.image == IMAGE
    assert "pip install" not in " ".join(container.command)
