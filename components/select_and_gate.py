"""Component: pick the champion among every variant of the run and gate it (value, change and bootstrap checks)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_and_gate(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    baseline_preset: str,
    gate_config: dict,
    registry: str,
    model_name: str,
    champion: Output[Model],
    champion_evaluation: Output[Artifact],
    blessing: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """The run's champion (best validation Recall@10) is gated against the registry's production champion and
    the run's ``baseline_preset``; its model and evaluation are copied to ``champion`` and
    ``champion_evaluation`` (what a push needs, wherever the tasks run), the gate's document (every check with
    value, threshold and verdict) written to ``blessing``; the return value (blessed or not) decides whether it
    is pushed. A single unnamed return on purpose: kfp.local resolves ``dsl.If`` only on a task's ``Output``
    (a named output's condition silently evaluates to False)."""
    from components.artifacts import VARIANT_KEY, by_variant, load_variants, log_metrics
    from pipelines import gate, storage
    from pipelines.configs import from_dict
    from pipelines.registry import read_champion

    variants = load_variants(models, evaluations)
    chosen = gate.select_champion(variants)
    baseline = next((v for v in variants if v["name"] == baseline_preset), None)
    decision = gate.gate(chosen, baseline, read_champion(registry, model_name), from_dict(gate.GateConfig, gate_config))
    storage.write_json(blessing.path, decision)
    storage.copy_tree(chosen["model_dir"], champion.path)
    storage.copy_tree(by_variant(evaluations, "evaluation")[chosen["name"]].path, champion_evaluation.path)
    for artifact in (champion, champion_evaluation, blessing):
        artifact.metadata[VARIANT_KEY] = chosen["name"]
    blessing.metadata["blessed"] = decision["blessed"]
    log_metrics(metrics, {"blessed": float(decision["blessed"]), **decision["candidate_metrics"]})
    return decision["blessed"]
