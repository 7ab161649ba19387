"""The Kubeflow Pipelines v2 DAG: preprocess, train and evaluate every variant, gate, push, report.

::

    ExitHandler ┬ preprocess ─┬─> ParallelFor(variant) [ train ──> evaluate ] ──> Collected ─┬─> select_and_gate ─┬─> If(blessed): push
                │             └─> evaluate_champion (the registry's champion on this run's data) ─┘                   └─> report
                └─> record_run (always last: the run's status and every finished variant)

``graph(p, build)`` is the DAG, once, at module level: a function of the pipeline's runtime parameters ``p``
(pipelines.parameters: what to train and where to put it, so one compiled YAML serves every run;
``pipelines/profiles.py`` fills them) and of ``build`` (the image, the loop's parallelism, the platform settings:
what the compiler must know). ``create_pipeline`` wraps it as the local pipeline, with outputs; the cluster runner
(pipelines.remote.cluster_pipeline) wraps the same graph in an exit handler and retries. Known KFP limits shape it
(shared/PLATFORM.md and below): the gate runs *after* the loop over everything collected and ``dsl.If`` reads that
task's single ``Output`` (kfp.local evaluates a condition on a loop item or on a *named* output as False,
silently); parameters used only by resource or platform settings inside the loop are also passed as arguments
(the compiler leaves them out of the loop's inputs); ints inside dicts come back as floats (the config
dataclasses convert them back); no argument may hold a null (protobuf values have none).

What a cluster's driver resolves (kubeflow/pipelines 2.17.0 backend/src/v2/driver/resolve.go; checked by
tests/pipelines/test_driver_rules.py): the run id placeholder, not ``{{$.pipeline_root}}`` (the run's root is the
``pipeline_root`` parameter); resource parameters read as strings (``accelerator_count`` is one); a loop item
feeding a ``dict`` input must be a struct (``variants: list[dict]``). Platform settings (limits, GPU tolerations
and node selector, a memory-backed /dev/shm; kfp-kubernetes) are in the local and Kubeflow forms: kfp.local ignores
them; Vertex AI Pipelines sizes machines from limits, and its SDK loads only a one-document file, so its form has
none.
"""


import inspect
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, Model

from components.evaluate import evaluate
from components.evaluate_champion import evaluate_champion
from components.image import IMAGE
from components.preprocess import preprocess
from components.push import push
from components.report import report
from components.select_and_gate import select_and_gate
from components.train import train
from pipelines import parameters

PIPELINE_NAME = "interest-pipeline"
# CPU/memory per step, requested and also the limit (GPUs come from the parameters): Vertex AI sizes each task's
# machine from the limits, and a limit keeps one task from starving its neighbours on a shared node. Each task
# also gets OMP_NUM_THREADS = its CPU: inside a pod, torch and numpy would otherwise start one thread per core of
# the whole node.
SMALL = ("1", "2G")  # select_and_gate, push, report, record_run
PREPROCESS = ("2", "8G")  # Beam DirectRunner on ML-1M peaks at about 0.5 GB; room for larger logs
TRAIN = ("4", "16G")  # one variant; a multi-GPU pod runs one process per GPU on these (and /dev/shm counts here)
EVALUATE = ("2", "8G")  # full-catalogue ranking of every user
DESCRIPTION = "Train, compare, gate and ship Transformer user-interest models."
# Kubeflow's artifact store Secret (in every profile namespace) and its keys, as S3 clients read them.
S3_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}


class Outputs(NamedTuple):
    report_html: HTML  # the comparison page
    report_markdown: Markdown  # the same, rendered by the KFP UI
    comparison: Artifact  # comparison.json: the report's numbers (what `interest run` prints)
    report_plots: Artifact  # the report's figures as PNG files (recall vs steps and seconds, user norms)
    blessing: Artifact  # blessing.json: every gate check with value, threshold and verdict, every judged file's sha256
    candidate: Model  # the selected variant's model (pushed when blessed)
    tensorboard: list[Artifact]  # one TensorBoard log directory per variant
    evaluations: list[Artifact]  # per variant: valid/ and test/ metrics.json + per_user.parquet


def sized(task: dsl.PipelineTask, name: str, cpu: str, memory: str) -> dsl.PipelineTask:
    """Name ``task`` and give it ``cpu``/``memory`` as request and limit, and as many OpenMP threads."""
    task.set_display_name(name).set_cpu_request(cpu).set_memory_request(memory)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    return task.set_env_variable("OMP_NUM_THREADS", cpu)


@dataclass(frozen=True)
class Build:
    """What the compiler must know that no runtime parameter can say."""

    image: str = IMAGE  # every task's container image
    parallelism: int = 0  # variants trained at once (0: all of them); a constant of the compiled loop
    kubernetes: bool = True  # the kfp-kubernetes platform settings (tolerations, node selector, /dev/shm, Secret)
    s3_endpoint: str = ""  # every task reaches an S3-compatible store there (AWS_ENDPOINT_URL); empty: none
    s3_secret: str = ""  # ... with the keys of this Secret (Kubeflow's mlpipeline-minio-artifact layout)


class Tasks(NamedTuple):
    """The DAG's tasks, for the wrappers that add outputs, retries or an exit handler."""

    prep: dsl.PipelineTask
    trained: dsl.PipelineTask
    evaluated: dsl.PipelineTask
    champion: dsl.PipelineTask
    decision: dsl.PipelineTask
    pushed: dsl.PipelineTask
    summary: dsl.PipelineTask


def run_place(p: SimpleNamespace) -> dict[str, Any]:
    """Where the run's own files go (components.artifacts.run_root): the root from a parameter (the KFP driver
    leaves {{$.pipeline_root}} unresolved), the run id from a placeholder every backend resolves."""
    return {"pipeline_root": p.pipeline_root, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}


def on_image(task: dsl.PipelineTask, build: Build) -> dsl.PipelineTask:
    """``build``'s image and store settings on one task."""
    task.set_container_image(build.image)
    if build.s3_endpoint and build.kubernetes:
        task.set_env_variable("AWS_ENDPOINT_URL", build.s3_endpoint)
    if build.s3_secret and build.kubernetes:
        kubernetes.use_secret_as_env(task, build.s3_secret, S3_SECRET_KEYS)
    return task


def graph(p: SimpleNamespace, build: Build) -> Tasks:
    """Every task of the DAG, on ``build``'s image, for the parameters ``p`` (pipelines.parameters)."""
    prep = sized(preprocess(dataset=p.dataset, config=p.preprocess_config, beam_args=p.beam_args),
                      "Preprocess events", *PREPROCESS)
    # The events behind a dataset name or path can change between runs: never reuse an old output.
    prep.set_caching_options(enable_caching=False)

    with dsl.ParallelFor(p.variants, name="variants", parallelism=build.parallelism) as variant:
        trained = sized(
            # The accelerator and scheduling parameters also go in as plain arguments: the KFP compiler does not
            # pass parameters that only resource or platform settings use into the loop's sub-DAG.
            train(data=prep.outputs["data"], variant=variant, model_overrides=p.model_overrides,
                  train_config=p.train_config, torch_threads=p.torch_threads, accelerator=p.accelerator_type,
                  gpus=p.accelerator_count, cluster=p.cluster, tolerations=p.gpu_tolerations,
                  node_selector=p.gpu_node_selector, image=build.image, warm_start=p.warm_start,
                  registry=p.registry, model_name=p.model_name, **run_place(p)),
            "Train variant", *TRAIN,
        ).set_accelerator_type(p.accelerator_type).set_accelerator_limit(p.accelerator_count)
        if build.kubernetes:
            kubernetes.add_toleration_json(trained, p.gpu_tolerations)
            kubernetes.add_node_selector_json(trained, p.gpu_node_selector)
            # NCCL and DataLoader workers share memory through /dev/shm, which is 64 MB in a container. Its
            # pages count against the memory limit, which bounds it.
            kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        evaluated = sized(
            evaluate(model=trained.outputs["model"], data=prep.outputs["data"], torch_threads=p.torch_threads,
                     **run_place(p)),
            "Evaluate variant", *EVALUATE,
        )

    # The production champion, judged on this run's data (runs while the variants train).
    champion = sized(
        evaluate_champion(data=prep.outputs["data"], registry=p.registry, model_name=p.model_name,
                          torch_threads=p.torch_threads),
        "Evaluate production champion", *EVALUATE,
    )
    # It reads the registry's current champion, which other runs move: never reuse an old result.
    champion.set_caching_options(enable_caching=False)
    decision = sized(
        select_and_gate(models=dsl.Collected(trained.outputs["model"]),
                        evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                        champion_evaluation=champion.outputs["champion_evaluation"], baseline=p.baseline,
                        gate_config=p.gate_config),
        "Select candidate and gate", *SMALL,
    )
    decision.set_caching_options(enable_caching=False)

    # On the task's single `Output`: kfp.local evaluates a condition on a named output as False, silently.
    with dsl.If(decision.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a KFP condition, not a bool
        pushed = sized(
            push(candidate=decision.outputs["candidate"], candidate_evaluation=decision.outputs["candidate_evaluation"],
                 evidence=decision.outputs["evidence"], blessing=decision.outputs["blessing"],
                 data=prep.outputs["data"], registry=p.registry, model_name=p.model_name,
                 gate_config=p.gate_config, baseline=p.baseline),
            "Push to registry", *SMALL,
        )
        pushed.set_caching_options(enable_caching=False)  # a side effect on the registry

    summary = sized(
        report(models=dsl.Collected(trained.outputs["model"]),
               evaluations=dsl.Collected(evaluated.outputs["evaluation"]), blessing=decision.outputs["blessing"],
               baseline=p.baseline),
        "Report", *SMALL,
    )
    tasks = Tasks(prep, trained, evaluated, champion, decision, pushed, summary)
    for task in tasks:
        on_image(task, build)
    return tasks


def pipeline_function(body, returns: Any = inspect.Signature.empty):
    """A ``@dsl.pipeline`` whose signature is the parameters record's (pipelines.parameters.signature) and whose
    body is ``body(p)``, ``p`` holding each parameter by name (KFP passes them positionally, in that order)."""

    def interest_pipeline(*values):
        return body(SimpleNamespace(**dict(zip(parameters.NAMES, values, strict=True))))

    interest_pipeline.__signature__ = parameters.signature(returns)
    interest_pipeline.__doc__ = DESCRIPTION
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(interest_pipeline)


def outputs(tasks: Tasks) -> Outputs:
    return Outputs(
        report_html=tasks.summary.outputs["html"], report_markdown=tasks.summary.outputs["markdown"],
        comparison=tasks.summary.outputs["comparison"], report_plots=tasks.summary.outputs["plots"],
        blessing=tasks.decision.outputs["blessing"], candidate=tasks.decision.outputs["candidate"],
        tensorboard=dsl.Collected(tasks.trained.outputs["tensorboard"]),
        evaluations=dsl.Collected(tasks.evaluated.outputs["evaluation"]),
    )


def create_pipeline(build: Build = Build()):  # noqa: B008 - a frozen value
    """The pipeline as kfp.local runs it: the graph and its outputs (no retries: kfp.local would sleep through
    their backoffs; no exit handler: a pipeline inside one cannot return outputs)."""
    return pipeline_function(lambda p: outputs(graph(p, build)), returns=Outputs)
