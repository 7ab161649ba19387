"""The training objective apart from the model: its validation, its overrides, old model_config.json files that
still hold it, and resume telling an objective change for what it is."""

from __future__ import annotations

import io
import json

import pytest
import torch

from core import contract, rundir
from core.configs import ConfigError, to_dict
from release.records import Run
from trainer.evaluate import load_model
from trainer.job import resolve_configs, route_overrides
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import ObjectiveConfig
from trainer.train import check_resumable, train

OLD_OBJECTIVE = {"loss": "full_ce", "num_negatives": 256, "penalty": "l2", "penalty_lambda": 1e-4,
                 "penalty_tau": 180.0}


@pytest.mark.parametrize("overrides,message", [
    ({"loss": "mse"}, r"ObjectiveConfig\.loss: .*'full_ce', 'sampled_softmax', 'bce'"),
    ({"penalty": "l1"}, r"ObjectiveConfig\.penalty: .*'none', 'l2', 'hinge'"),
    ({"num_negatives": 0}, r"ObjectiveConfig\.num_negatives: must be >= 1"),
    ({"penalty": "l2"}, r"ObjectiveConfig\.penalty_lambda: penalty 'l2' needs penalty_lambda > 0"),
    ({"penalty": "hinge", "penalty_lambda": 1e-3, "penalty_tau": -1.0}, r"ObjectiveConfig\.penalty_tau: must be >= 0"),
    ({"penalty_lambda": -1.0}, r"ObjectiveConfig\.penalty_lambda: must be >= 0"),
])
def test_invalid_objectives_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ObjectiveConfig(**overrides)


def test_the_model_config_describes_the_forward_pass_only():
    with pytest.raises(TypeError):
        ModelConfig(penalty="l2")  # type: ignore[call-arg]


@pytest.mark.parametrize("key", ["objective.penalty", "penalty", "model.penalty"])  # model.: the field's old place
def test_objective_overrides_reach_the_objective(key):
    configs = resolve_configs("baseline", (f"{key}=l2", "objective.penalty_lambda=1e-3"))
    assert (configs.objective.penalty, configs.objective.penalty_lambda) == ("l2", 1e-3)
    assert configs.model == ModelConfig()
    assert route_overrides([f"{key}=l2"]) == {"model": [], "objective": ["penalty=l2"], "train": []}
    with pytest.raises(ConfigError, match="not a ModelConfig, ObjectiveConfig or TrainConfig field"):
        route_overrides(["objective.d_model=8"])


def test_a_config_file_may_still_hold_the_objective_in_its_model_section(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model: {d_model: 32, penalty: hinge, penalty_lambda: 0.001}\nobjective: {penalty_tau: 90}\n")
    configs = resolve_configs("baseline", config_file=str(path))
    assert configs.model.d_model == 32
    assert configs.objective == ObjectiveConfig(penalty="hinge", penalty_lambda=1e-3, penalty_tau=90.0)


def test_an_old_model_directory_with_the_objective_in_model_config_json_still_loads(tmp_path, kit):
    """Champions in registries were exported before objective_config.json: their model_config.json holds both."""
    model_cfg = kit.TINY_MODEL
    model = InterestModel(model_cfg, 5)
    old = tmp_path / "old-model"
    with rundir.writing(str(old), contract.MODEL_KIND) as staging:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        with open(staging.join(contract.WEIGHTS), "wb") as f:
            f.write(buffer.getvalue())
        with open(staging.join(contract.MODEL_CONFIG), "w") as f:
            json.dump({**to_dict(model_cfg), **OLD_OBJECTIVE}, f)
        with open(staging.join(contract.VOCAB), "w") as f:
            json.dump({"padding_index": 0, "items": ["a", "b", "c", "d", "e"]}, f)
    loaded = load_model(str(old), torch.device("cpu"))
    assert loaded.model.cfg == model_cfg
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    run = Run.load(name="old", model_dir=str(old))
    assert run.objective == OLD_OBJECTIVE and "penalty" not in run.model_config


def test_resume_names_an_objective_change_and_reads_old_checkpoints(kit):
    model_cfg, train_cfg = kit.TINY_MODEL, kit.tiny_train()
    objective = ObjectiveConfig(**OLD_OBJECTIVE)
    old_checkpoint = {"data_digest": "d", "model_config": json.dumps({**to_dict(model_cfg), **OLD_OBJECTIVE}),
                      "train_config": json.dumps(to_dict(train_cfg))}
    check_resumable(old_checkpoint, model_cfg, train_cfg, "d", "ckpt", objective)  # the same run: resumes
    with pytest.raises(ConfigError, match=r"holds a run with objective penalty='l2', now 'none'"):
        check_resumable(old_checkpoint, model_cfg, train_cfg, "d", "ckpt", ObjectiveConfig())


def test_a_trained_model_keeps_its_objective_beside_its_config(tiny_data, tmp_path, kit):
    out = tmp_path / "run"
    objective = ObjectiveConfig(penalty="l2", penalty_lambda=1e-3)
    train(str(tiny_data), str(out), kit.TINY_MODEL, kit.tiny_train(epochs=None, max_steps=4), objective=objective)
    assert json.loads((out / contract.OBJECTIVE_CONFIG).read_text()) == to_dict(objective)
    assert "penalty" not in json.loads((out / contract.MODEL_CONFIG).read_text())
    with pytest.raises(ConfigError, match=r"holds a run with objective penalty_lambda=0.001, now 0.01"):
        train(str(tiny_data), str(out), kit.TINY_MODEL, kit.tiny_train(epochs=None, max_steps=4),
              objective=ObjectiveConfig(penalty="l2", penalty_lambda=1e-2))
