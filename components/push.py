"""Component: push the blessed champion to the model registry and move the champion pointer."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def push(
    model: Input[Model],
    evaluation: Input[Artifact],
    blessing: Input[Artifact],
    data: Input[Dataset],
    registry: str,
    model_name: str,
) -> str:
    """Runs only on a blessing: copies the model with its test metrics, blessing and lineage into the registry and
    moves the champion pointer (refused if another run moved it since the gate read it: re-gate). Returns the
    version's URI."""
    import json
    import os

    from pipelines.registry import push as push_version

    with open(blessing.path) as f:
        decision = json.load(f)
    result = push_version(decision, registry, model_name, model_dir=model.path,
                          eval_dir=os.path.join(evaluation.path, "test"), data_dir=data.path)
    print(f"push: {result.outcome} {result.uri} (previous champion: {result.previous_version})")
    return result.uri
