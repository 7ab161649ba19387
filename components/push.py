"""Component: push the blessed champion to the model registry and move the champion pointer."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def push(
    model: Input[Model],
    blessing: Input[Artifact],
    data: Input[Dataset],
    registry: str,
    model_name: str,
) -> str:
    """Runs only on a blessing; returns the URI of the pushed version."""
    from pipelines.registry import push as push_model

    return push_model(model.path, blessing.path, data.path, registry, model_name)
