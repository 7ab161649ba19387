"""Component: select the candidate among every variant of the run and gate it (release.gate.decide)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_and_gate(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    champion_evaluation: Input[Artifact],
    baseline: str,
    gate_config: dict,
    candidate: Output[Model],
    candidate_evaluation: Output[Artifact],
    evidence: Output[Artifact],
    blessing: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """The candidate (release.comparison: the best-validated run of the variant with the best mean validation
    Recall@10) is gated against the production champion, as evaluated on this run's data by
    ``evaluate_champion``, and against the ``baseline`` variant: the same ``release.gate.decide`` as ``interest
    gate``. Its model and evaluation are copied to ``candidate`` and ``candidate_evaluation``, the other
    evaluations the gate judged to ``evidence`` (one directory per blessing input role: what a push verifies,
    wherever the tasks run), the blessing (every check, every judged file's sha256) to ``blessing``; the return
    value (blessed or not) decides whether it is pushed. A single unnamed return on purpose: kfp.local resolves
    ``dsl.If`` only on a task's ``Output`` (a named output's condition silently evaluates to False)."""
    import json
    import os

    from components.artifacts import SPLITS, by_run, identity, load_runs, log_metrics, tag
    from components.events import Task
    from core import rundir, storage
    from core.configs import from_dict
    from core.contract import CHAMPION_REF
    from release.gate import GateConfig, decide
    from release.records import ChampionRef

    task = Task("select_and_gate")
    with open(os.path.join(champion_evaluation.path, CHAMPION_REF)) as f:
        champion = json.load(f)["champion"]
    champion = ChampionRef(**champion) if champion else None
    runs = load_runs(models, evaluations)
    decision = decide(runs, baseline, champion, from_dict(GateConfig, gate_config),
                      champion_evaluation=os.path.join(champion_evaluation.path, "test") if champion else None)
    chosen = decision.candidate["name"]
    rundir.copy_complete(decision.candidate["model_dir"], candidate.path)
    chosen_evaluation = by_run(evaluations, "evaluation")[chosen].path
    for split in SPLITS:
        rundir.copy_complete(os.path.join(chosen_evaluation, split), os.path.join(candidate_evaluation.path, split))
    os.makedirs(evidence.path, exist_ok=True)
    for role, bound in decision.inputs.items():
        if not role.startswith("candidate_"):
            rundir.copy_complete(bound["dir"], os.path.join(evidence.path, role))
    storage.write_json(blessing.path, decision.to_json())
    who = identity(by_run(models, "model")[chosen].metadata)
    for artifact in (candidate, candidate_evaluation, evidence, blessing):
        tag(artifact, chosen, who["variant"], who["seed"])
    blessing.metadata["blessed"] = decision.blessed
    log_metrics(metrics, {"blessed": float(decision.blessed), **decision.candidate_metrics})
    failed = [c.name for c in decision.checks if not c.passed]
    task.done(f"candidate {chosen}: " + ("BLESSED" if decision.blessed else f"not blessed ({', '.join(failed)})"))
    return decision.blessed
