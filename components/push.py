"""Component: push the blessed candidate to the model registry and move the champion pointer."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def push(
    candidate: Input[Model],
    candidate_evaluation: Input[Artifact],
    evidence: Input[Artifact],
    blessing: Input[Artifact],
    data: Input[Dataset],
    registry: str,
    model_name: str,
    gate_config: dict,
    baseline: str,
) -> str:
    """Runs only on a blessing: verifies it against the copies this task received (every judged file's sha256,
    the verdict re-derived), copies the model with its test metrics, blessing and lineage into the registry and
    moves the champion pointer (refused if another run moved it since the champion was read: re-gate). The
    blessing must have been judged by this pipeline's ``gate_config`` and ``baseline`` (its policy), not
    by a config of its own. Returns the version's URI."""
    import json
    import os

    from components.events import Task
    from core.configs import from_dict
    from release.gate import GateConfig
    from release.records import Blessing
    from release.registry import Policy
    from release.registry import push as push_version

    task = Task("push")
    with open(blessing.path) as f:
        decision = Blessing.from_json(json.load(f), blessing.path)
    locations = {"candidate_model": candidate.path,
                 **{f"candidate_{split}": os.path.join(candidate_evaluation.path, split) for split in ("valid", "test")},
                 **{role: os.path.join(evidence.path, role)
                    for role in (os.listdir(evidence.path) if os.path.isdir(evidence.path) else [])}}
    policy = Policy(from_dict(GateConfig, gate_config), baseline or None)
    result = push_version(decision, registry, model_name, locations=locations, data_dir=data.path, policy=policy)
    print(f"push: {result.outcome} {result.uri} (previous champion: {result.previous_version})")
    task.done(f"{result.outcome} {result.uri}")
    return result.uri
