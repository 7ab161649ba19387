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
    tolerations: list,
    node_selector: dict,
    image: str,
    warm_start: bool,
    registry: str,
    model_name: str,
    pipeline_root: str,
    run_id: str,
    model: Output[Model],
    tensorboard: Output[Artifact],
    metrics: Output[Metrics],
):
    """``variant``: a trainer.variants.VariantSpec mapping (name, preset, set, seed); ``model_overrides``/
    ``train_config``: ModelConfig key=value and TrainConfig fields for every variant (the variant's own win);
    ``accelerator``/``gpus``: this pod's accelerator type (recorded with the model: speed figures depend on it)
    and count (torchrun runs one process each; the task fails at once if torch sees fewer CUDA devices);
    ``cluster``: trainer.launch.ClusterConfig fields (multi-node PyTorchJob / Vertex job), whose replicas get
    ``tolerations``/``node_selector`` (the pipeline's GPU pool) unless it names its own; ``image``: the image
    cluster jobs run; ``warm_start``: start from the registry's champion (``registry``, ``model_name``) when there
    is one (trainer.warm_start; the lineage records it); ``pipeline_root``/``run_id``: where the run's own place
    is (components.artifacts.run_root): checkpoints go there, at a URI every attempt of this task shares, so a
    retried or preempted task resumes from the last one instead of step 0."""
    import dataclasses
    import json
    import os

    from components.artifacts import log_metrics, move_tensorboard, run_root, set_torch_threads, tag
    from components.events import Task
    from core import storage
    from core.configs import from_dict
    from trainer import launch
    from trainer.job import TrainJob, overrides_from
    from trainer.variants import VariantSpec

    set_torch_threads(torch_threads)
    spec = VariantSpec.parse(variant)
    name = spec.run_name
    task = Task("train", name, progress_from="trainer")  # start/end lines and progress for `interest run`
    root = run_root(pipeline_root, run_id)
    warm = ()
    if warm_start:
        from release.registry import read_champion

        champion = read_champion(registry, model_name)  # none yet: the first run trains from scratch
        warm = (f"train.init_from={json.dumps(champion.uri)}",) if champion else ()
    settings = from_dict(launch.ClusterConfig, cluster)
    settings = dataclasses.replace(settings, tolerations=settings.tolerations or tuple(tolerations),
                                   node_selector=settings.node_selector or dict(node_selector))
    local = settings.launcher == "local"
    job = TrainJob(data=data.path if local else data.uri, output=model.path if local else f"{model.uri}-job",
                   preset=spec.preset,
                   overrides=(*overrides_from(model_overrides, train_config), *spec.overrides(), *warm),
                   checkpoint_dir=storage.join(root, "checkpoints", name))
    launch.train_on(settings, launch.ClusterJob(launch.job_name("interest", name), image, job), model.path,
                    local_gpus=gpus)
    move_tensorboard(model.path, tensorboard.path, name)
    storage.copy_tree(os.path.join(tensorboard.path, name), storage.join(root, "tensorboard", name))
    if settings.vertex_tensorboard and local:  # a Vertex CustomJob streams its logs there itself
        launch.upload_to_vertex_tensorboard(settings, tensorboard.path, experiment=run_id)
    with open(os.path.join(model.path, "summary.json")) as f:
        summary = json.load(f)
    for artifact in (model, tensorboard):
        tag(artifact, name, spec.name, spec.seed)
    model.metadata.update(accelerator=accelerator or "cpu", gpus=gpus,
                          resumed_from=list(summary.get("resumed_from") or []))
    tensorboard.metadata["format"] = "tensorboard"  # a directory of SummaryWriter event files, one run per variant
    tensorboard.metadata["logs"] = storage.join(root, "tensorboard")  # every variant's, for a Tensorboard resource
    log_metrics(metrics, {k: v for k, v in summary.items() if k != "history"})
    best = summary["best"]["valid_recall@10"]
    task.done(f"valid Recall@10 {best if best is not None else float('nan'):.4f} after {summary['steps']} steps")
