"""Component: train one run of a variant (trainer.train_variant) -> model artifact, its TensorBoard logs and its
training metrics."""

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
    gpus: str,
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
    and count (a string, as the pipeline's resource parameter; torchrun runs one process each; the task fails at
    once if torch sees fewer CUDA devices);
    ``cluster``: trainer.launch.ClusterConfig fields (multi-node PyTorchJob / Vertex job), whose replicas get
    ``tolerations``/``node_selector`` (the pipeline's GPU pool) unless it names its own; ``image``: the image
    cluster jobs run; ``warm_start``: start from the registry's champion (``registry``, ``model_name``) when there
    is one (trainer.warm_start; the lineage records it); ``pipeline_root``/``run_id``: where the run's own place
    is (components.artifacts.run_root): checkpoints go there, at a URI every attempt of this task shares, so a
    retried or preempted task resumes from the last one instead of step 0."""
    from components.artifacts import log_metrics, run_root, set_torch_threads, tag
    from components.events import Task
    from components.warm_start import champion_reference, resolve_warm_start
    from core import storage
    from trainer.job import TrainJob, overrides_from
    from trainer.train_variant import cluster_settings, train_variant
    from trainer.variants import VariantSpec

    set_torch_threads(torch_threads)
    spec = VariantSpec.parse(variant)
    task = Task("train", spec.run_name, progress_from="trainer")  # start/end lines and progress for `interest run`
    overrides = overrides_from(model_overrides, train_config)
    if warm_start:  # the champion's version directory now, or from scratch when there is none yet
        warmed = TrainJob(data="", output="", preset=spec.preset,
                          overrides=(*overrides, champion_reference(registry, model_name)))
        overrides = resolve_warm_start(warmed, missing_ok=True)[0].overrides
    root = run_root(pipeline_root, run_id)
    summary = train_variant(spec, overrides, cluster_settings(cluster, tolerations, node_selector), data=data,
                            model=model, tensorboard_dir=tensorboard.path, run_root=root, run_id=run_id,
                            image=image, gpus=int(gpus or 0))
    for artifact in (model, tensorboard):
        tag(artifact, spec.run_name, spec.name, spec.seed)
    model.metadata.update(accelerator=accelerator or "cpu", gpus=int(gpus or 0),
                          resumed_from=list(summary.get("resumed_from") or []))
    tensorboard.metadata["format"] = "tensorboard"  # a directory of SummaryWriter event files, one per run
    tensorboard.metadata["logs"] = storage.join(root, "tensorboard")  # every run's, for a Tensorboard resource
    log_metrics(metrics, {k: v for k, v in summary.items() if k != "history"})
    best = summary["best"]["valid_recall@10"]
    task.done(f"valid Recall@10 {best if best is not None else float('nan'):.4f} after {summary['steps']} steps")
