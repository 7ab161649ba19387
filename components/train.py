"""Component: train one variant -> model artifact, its TensorBoard logs and its training metrics."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    data: Input[Dataset],
    variant: dict,
    model_overrides: list[str],
    train_config: dict,
    torch_threads: int,
    accelerator: str,
    gpus: int,
    cluster: dict,
    image: str,
    warm_start: bool,
    registry: str,
    model_name: str,
    model: Output[Model],
    tensorboard: Output[Artifact],
    metrics: Output[Metrics],
):
    """``variant``: a trainer.variants.VariantSpec mapping (name, preset, set, seed); ``model_overrides``/
    ``train_config``: ModelConfig key=value and TrainConfig fields for every variant (the variant's own win); ``accelerator``/``gpus``: this pod's accelerator type (recorded with the
    model: speed figures depend on it) and count (torchrun runs one process each);
    ``cluster``: trainer.launch.ClusterConfig fields (multi-node PyTorchJob / Vertex job); ``image``: the
    image cluster jobs run; ``warm_start``: start from the registry's champion (``registry``, ``model_name``) when
    there is one (trainer.warm_start; the lineage records it)."""
    import json
    import os

    from components.artifacts import VARIANT_KEY, log_metrics, move_tensorboard, set_torch_threads
    from components.events import Task
    from core.configs import from_dict
    from trainer import launch
    from trainer.job import TrainJob, overrides_from
    from trainer.variants import VariantSpec

    set_torch_threads(torch_threads)
    spec = VariantSpec.parse(variant)
    task = Task("train", spec.run_name, progress_from="trainer")  # start/end lines and progress for `interest run`
    warm = ()
    if warm_start:
        from release.registry import read_champion

        champion = read_champion(registry, model_name)  # none yet: the first run trains from scratch
        warm = (f"train.init_from={json.dumps(champion.uri)}",) if champion else ()
    settings = from_dict(launch.ClusterConfig, cluster)
    local = settings.launcher == "local"
    job = TrainJob(data=data.path if local else data.uri, output=model.path if local else f"{model.uri}-job",
                   preset=spec.preset,
                   overrides=(*overrides_from(model_overrides, train_config), *spec.overrides(), *warm))
    name = spec.run_name
    launch.train_on(settings, launch.ClusterJob(launch.job_name("interest", name), image, job), model.path,
                    local_gpus=gpus)
    move_tensorboard(model.path, tensorboard.path, name)
    with open(os.path.join(model.path, "summary.json")) as f:
        summary = json.load(f)
    for artifact in (model, tensorboard):
        artifact.metadata[VARIANT_KEY] = name
        artifact.metadata.update(variant_name=spec.name, seed=spec.seed if spec.seed is not None else -1)
    model.metadata.update(accelerator=accelerator or "cpu", gpus=gpus)
    tensorboard.metadata["format"] = "tensorboard"  # a directory of SummaryWriter event files, one run per variant
    log_metrics(metrics, {k: v for k, v in summary.items() if k != "history"})
    best = summary["best"]["valid_recall@10"]
    task.done(f"valid Recall@10 {best if best is not None else float('nan'):.4f} after {summary['steps']} steps")
