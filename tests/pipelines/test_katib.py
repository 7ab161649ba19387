"""``interest tune --katib``: the Experiment checked the way Katib v0.19.0 would check it (no cluster here).

Katib's CRD (tests/pipelines/katib-v0.19.0/experiment-crd.yaml) preserves unknown fields, so the API server checks
nothing; what does check a spec is (1) the controller decoding it into its Go types, whose OpenAPI definitions are
vendored as swagger.json (validated here with jsonschema, unknown fields refused: a misspelt field would be
silently dropped), and (2) the admission webhook, pkg/webhook/v1beta1/experiment/validator/validator.go at
v0.19.0, whose rules ``webhook_errors`` follows line by line. The trial's command is parsed by the real CLI, and
its output by Katib's default StdOut filter (pkg/metricscollector/v1beta1/common/const.go, DefaultFilter).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipelines import cli, katib
from tests.support.data import write_preprocessed
from trainer.job import job_from_args
from trainer.tune_space import TuneSpace

VENDORED = Path(__file__).parent / "katib-v0.19.0"
ML1M_SPACE = Path(__file__).parents[2] / "benchmarks" / "tune" / "ml1m-space.yaml"
# Katib v0.19.0, pkg/metricscollector/v1beta1/common/const.go
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# manifests/v1beta1/installs/katib-standalone/katib-config.yaml at v0.19.0: the algorithms a Katib install serves
SUGGESTIONS = {"random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol", "multivariate-tpe",
               "enas", "darts", "pbt"}
EARLY_STOPPING = {"medianstop"}
# pkg/suggestion/v1beta1/hyperopt/service.py at v0.19.0: the settings its TPE accepts
TPE_SETTINGS = {"gamma", "prior_weight", "n_EI_candidates", "random_state"}
PARAM_REF = re.compile(r"\$\{trialParameters\.(.+?)\}")
META_REF = re.compile(r"\$\{trialSpec\.(.+?)\}")
META_KEYS = {"Name", "Namespace", "Kind", "APIVersion", "Annotations", "Labels"}


def strict(schema):
    """The definitions with unknown fields refused wherever a type lists its fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def experiment_schema() -> dict:
    definitions = strict(json.loads((VENDORED / "swagger.json").read_text())["definitions"])
    # Kubernetes' own types are not in Katib's file: metadata as the webhook reads it, the trial spec free-form
    # (the webhook's own checks below cover it), times as strings.
    definitions["v1.ObjectMeta"] = {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}}}
    for name in ("v1.unstructured.Unstructured", "v1.Container", "v1.HTTPGetAction", "v1.ListMeta"):
        definitions[name] = {"type": "object"}
    definitions["v1.Time"] = {"type": "string"}
    return {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}


def webhook_errors(exp: dict) -> list[str]:
    """validator.go's ValidateExperiment rules that a spec (not the cluster) decides, in its order."""
    errors, spec = [], exp["spec"]
    name = exp["metadata"]["name"]
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        errors.append("metadata.name")
    for key in ("maxTrialCount", "parallelTrialCount"):
        if key in spec and spec[key] <= 0:
            errors.append(f"spec.{key}")
    if spec.get("maxFailedTrialCount", 0) < 0:
        errors.append("spec.maxFailedTrialCount")
    if spec.get("maxTrialCount") and spec.get("parallelTrialCount", 0) > spec["maxTrialCount"]:
        errors.append("spec.parallelTrialCount > maxTrialCount")
    objective = spec.get("objective") or {}
    if objective.get("type") not in ("minimize", "maximize") or not objective.get("objectiveMetricName"):
        errors.append("spec.objective")
    if spec["algorithm"].get("algorithmName") not in SUGGESTIONS:
        errors.append("spec.algorithm.algorithmName")
    if spec["algorithm"]["algorithmName"] == "tpe" and {
            s["name"] for s in spec["algorithm"].get("algorithmSettings", [])} - TPE_SETTINGS:
        errors.append("spec.algorithm.algorithmSettings")
    if "earlyStopping" in spec and spec["earlyStopping"].get("algorithmName") not in EARLY_STOPPING:
        errors.append("spec.earlyStopping.algorithmName")
    for i, p in enumerate(spec["parameters"]):
        space = p.get("feasibleSpace") or {}
        if p["parameterType"] not in ("int", "double", "categorical", "discrete", ""):
            errors.append(f"spec.parameters[{i}].parameterType")
        if space.get("distribution", "") not in ("", "uniform", "logUniform", "normal", "logNormal"):
            errors.append(f"spec.parameters[{i}].feasibleSpace.distribution")
        if not space:
            errors.append(f"spec.parameters[{i}].feasibleSpace")
        elif p["parameterType"] in ("int", "double") and (space.get("list") or not space.get("min")
                                                           or not space.get("max")):
            errors.append(f"spec.parameters[{i}].feasibleSpace (int/double)")
        elif p["parameterType"] in ("categorical", "discrete") and any(space.get(k) for k in ("min", "max", "step")):
            errors.append(f"spec.parameters[{i}].feasibleSpace (categorical)")
    template = spec["trialTemplate"]
    if not template.get("primaryContainerName"):
        errors.append("trialTemplate.primaryContainerName")
    if not template.get("successCondition") or not template.get("failureCondition"):
        errors.append("trialTemplate.successCondition/failureCondition")
    text = json.dumps(template["trialSpec"])
    names = {p["name"] for p in spec["parameters"]}
    declared = set()
    for i, tp in enumerate(template.get("trialParameters") or []):
        if not tp.get("name") or not tp.get("reference") or "{" in tp["name"] or "}" in tp["name"]:
            errors.append(f"trialParameters[{i}]")
            continue
        meta = META_REF.fullmatch(tp["reference"])
        is_meta = bool(meta) and re.sub(r"\[.+\]$", "", meta.group(1)) in META_KEYS
        if not is_meta and tp["reference"] not in names:
            errors.append(f"trialParameters[{i}].reference")
        if f"${{trialParameters.{tp['name']}}}" not in text:
            errors.append(f"trialParameters[{i}].name not in the template")
        declared.add(tp["name"])
    if set(PARAM_REF.findall(text)) - declared:
        errors.append("trialTemplate: undeclared ${trialParameters.X}")
    trial_spec = template["trialSpec"]
    if (trial_spec.get("metadata") or {}).get("name") or (trial_spec.get("metadata") or {}).get("namespace"):
        errors.append("trialSpec.metadata")
    if not trial_spec.get("apiVersion") or not trial_spec.get("kind"):
        errors.append("trialSpec.apiVersion/kind")
    collector = spec.get("metricsCollectorSpec", {}).get("collector", {}).get("kind", "StdOut")
    if collector not in ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None"):
        errors.append("metricsCollectorSpec.collector.kind")
    return errors


@pytest.fixture
def ml1m_experiment() -> dict:
    return katib.experiment(TuneSpace.load(str(ML1M_SPACE)), "ml1m-tune", "gs://bucket/data", "gs://bucket/tune",
                            "registry/interest-pipeline:abc", trials=24, budget_seconds=1200, parallel=3)


def test_the_vendored_crd_checks_nothing_so_the_go_types_and_the_webhook_do():
    crd = yaml.safe_load((VENDORED / "experiment-crd.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_the_experiment_passes_katibs_types_and_webhook(ml1m_experiment):
    jsonschema.validate(ml1m_experiment, experiment_schema())
    assert webhook_errors(ml1m_experiment) == []
    spec = ml1m_experiment["spec"]
    assert {p["name"]: p["parameterType"] for p in spec["parameters"]} == {
        "model-block": "categorical", "model-mlp": "categorical", "train-lr": "double", "model-dropout": "double",
        "train-schedule": "categorical"}
    lr = next(p for p in spec["parameters"] if p["name"] == "train-lr")
    assert lr["feasibleSpace"] == {"min": "0.0005", "max": "0.004", "distribution": "logUniform"}


@pytest.mark.parametrize("break_it, rule", [
    (lambda e: e["spec"]["parameters"][0].update(parameterType="float"), "parameterType"),
    (lambda e: e["spec"]["parameters"][2]["feasibleSpace"].pop("max"), "feasibleSpace (int/double)"),
    (lambda e: e["spec"]["trialTemplate"]["trialParameters"].pop(), "undeclared"),
    (lambda e: e["metadata"].update(name="ML1M"), "metadata.name"),
    (lambda e: e["spec"]["algorithm"].update(algorithmName="optuna-tpe"), "algorithmName"),
])
def test_the_webhook_rules_refuse_what_katib_refuses(ml1m_experiment, break_it, rule):
    broken = copy.deepcopy(ml1m_experiment)
    break_it(broken)
    assert any(rule in error for error in webhook_errors(broken))


def test_a_misspelt_field_fails_the_schema(ml1m_experiment):
    broken = copy.deepcopy(ml1m_experiment)
    broken["spec"]["parameters"][0]["feasibleSpace"]["choices"] = broken["spec"]["parameters"][0][
        "feasibleSpace"].pop("list")
    with pytest.raises(jsonschema.ValidationError, match="choices"):
        jsonschema.validate(broken, experiment_schema())


def test_the_trial_command_is_the_cli_training_the_drawn_recipe(ml1m_experiment):
    """Katib substitutes the drawn values into the container's args; the real parser and config resolver take
    them, and the result is the preset plus the space's fixed settings plus the drawn ones."""
    template = ml1m_experiment["spec"]["trialTemplate"]
    container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == template["primaryContainerName"] and container["command"] == ["interest"]
    drawn = {"trialName": "ml1m-tune-abc12", "model-block": "parallel", "model-mlp": "geglu", "train-lr": "0.0021",
             "model-dropout": "0.35", "train-schedule": "cosine"}
    args = [PARAM_REF.sub(lambda m: drawn[m.group(1)], arg) for arg in container["args"]]
    parsed = cli.build_parser().parse_args(args)
    assert parsed.func.__name__ == "run_tune_trial"
    job = job_from_args(parsed)
    configs = job.configs()
    model_cfg, train_cfg = configs.model, configs.train
    assert job.preset == "best" and job.output == "gs://bucket/tune/ml1m-tune-abc12"
    assert (model_cfg.block, model_cfg.mlp, model_cfg.dropout) == ("parallel", "geglu", 0.35)
    assert (train_cfg.lr, train_cfg.schedule, train_cfg.time_budget_seconds) == (0.0021, "cosine", 1200)
    assert train_cfg.eval_every_steps == 40  # a fixed setting of the space


def test_a_trial_prints_every_validation_as_katibs_collector_reads_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny_data = write_preprocessed(tmp_path / "data")
    code = cli.main(["tune-trial", "--data", str(tiny_data), "--output", str(tmp_path / "trial"), "--max-steps", "8",
                     "--set", "d_model=16", "--set", "n_layer=1", "--set", "max_len=12", "--set", "batch_size=6",
                     "--set", "eval_every_steps=4", "--set", "patience=0"])
    assert code == 0
    metrics = [re.fullmatch(DEFAULT_FILTER, line) for line in capsys.readouterr().out.splitlines()]
    values = [float(m.group(2)) for m in metrics if m and m.group(1) == katib.METRIC]
    summary = json.loads((tmp_path / "trial" / "summary.json").read_text())
    assert values == pytest.approx([h["valid_recall@10"] for h in summary["history"]], abs=1e-6)
    assert len(values) == 2


def test_cluster_storage_and_a_katib_name_are_required():
    space = TuneSpace.load(str(ML1M_SPACE))
    with pytest.raises(Exception, match="--data: a cluster trial needs gs:// or s3://"):
        katib.experiment(space, "ml1m", "/local/data", "gs://b/t", "img", trials=2, budget_seconds=60)
    with pytest.raises(Exception, match="Katib Experiment name"):
        katib.experiment(space, "ML_1m", "gs://b/d", "gs://b/t", "img", trials=2, budget_seconds=60)
