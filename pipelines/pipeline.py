"""The Kubeflow Pipelines v2 DAG: preprocess, train and evaluate every variant, gate, push, report.

::

    ExitHandler ┬ preprocess ─┬─> ParallelFor(variant) [ train ──> evaluate ] ──> Collected ─┬─> select_and_gate ─┬─> If(blessed): push
                │             └─> evaluate_champion (the registry's champion on this run's data) ─┘                   └─> report
                └─> record_run (always last: the run's status and every finished variant)

``create_pipeline(image, parallelism, for_cluster)`` builds the ``@dsl.pipeline`` function; what to train and
where to put it are the pipeline's runtime parameters, so one compiled YAML serves every run
(``pipelines/profiles.py`` fills them). Known KFP limits shape it (shared/PLATFORM.md and below): the gate runs
*after* the loop over everything collected and ``dsl.If`` reads that task's single ``Output`` (kfp.local
evaluates a condition on a loop item or on a *named* output as False, silently); parameters used only by resource
or platform settings inside the loop are also passed as arguments (the compiler leaves them out of the loop's
inputs); ints inside dicts come back as floats (the config dataclasses convert them back); no argument may hold a
null (protobuf values have none).

For a cluster (``for_cluster=True``: ``interest compile|submit|schedule``) the DAG also has what a preemptible,
shared cluster needs: train and evaluate are retried with a long backoff (a retried train task resumes from its
checkpoints at ``<pipeline root>/runs/<run id>/checkpoints/<variant>``), and an exit handler whose task records
the run's end state and every finished variant, since one variant failing for good fails the loop and the gate
and report never run. A pipeline inside an exit handler cannot return outputs (a KFP rule), and kfp.local would
sleep through the backoffs, so ``interest run`` compiles the same DAG without both. Platform settings (limits,
GPU tolerations and node selector, a memory-backed /dev/shm; kfp-kubernetes) are in both: kfp.local ignores them.
A KFP backend >= 2.5 runs it (dsl.Collected of artifacts, the run-id and pipeline-root placeholders, platform
settings from parameters); Vertex AI Pipelines ignores the Kubernetes settings and sizes machines from limits.
"""


import contextlib
from pathlib import Path
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, Model

from components.evaluate import evaluate
from components.evaluate_champion import evaluate_champion
from components.image import IMAGE
from components.preprocess import preprocess
from components.push import push
from components.record_run import record_run
from components.report import report
from components.select_and_gate import select_and_gate
from components.train import train
from core.configs import require
from pipelines.profiles import PROFILES

PIPELINE_NAME = "interest-pipeline"
# CPU/memory per step, requested and also the limit (GPUs come from the parameters): Vertex AI sizes each task's
# machine from the limits, and a limit keeps one task from starving its neighbours on a shared node. Each task
# also gets OMP_NUM_THREADS = its CPU: inside a pod, torch and numpy would otherwise start one thread per core of
# the whole node.
SMALL = ("1", "2G")  # select_and_gate, push, report, record_run
PREPROCESS = ("2", "8G")  # Beam DirectRunner on ML-1M peaks at about 0.5 GB; room for larger logs
TRAIN = ("4", "16G")  # one variant; a multi-GPU pod runs one process per GPU on these (and /dev/shm counts here)
EVALUATE = ("2", "8G")  # full-catalogue ranking of every user
# A preempted or evicted pod fails its task: retry it after minutes, not at once (the node pool needs time to
# come back), doubling, for at most a few hours. A retried train task resumes from its checkpoints, whose
# directory a dead attempt still holds locked until its lease runs out (core.rundir, 900 s): the first retry
# waits at least that long, so it never fails on the lock of the attempt it replaces.
RETRY = {"num_retries": 3, "backoff_duration": "900s", "backoff_factor": 2.0, "backoff_max_duration": "21600s"}
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


def _resources(task: dsl.PipelineTask, name: str, cpu: str, memory: str) -> dsl.PipelineTask:
    task.set_display_name(name).set_cpu_request(cpu).set_memory_request(memory)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    return task.set_env_variable("OMP_NUM_THREADS", cpu)


def create_pipeline(image: str = IMAGE, parallelism: int = 0, for_cluster: bool = False, s3_endpoint: str = "",
                    s3_secret: str = ""):
    """The pipeline function, with every task on ``image``; ``parallelism`` caps how many variants train at
    once (0: all of them); ``for_cluster``: with retries and the exit handler (see the module docstring);
    ``s3_endpoint``/``s3_secret``: every task reaches an S3-compatible store (MinIO: Kubeflow's default pipeline
    root ``minio://mlpipeline/...``) at that endpoint (AWS_ENDPOINT_URL) with the access key of that Secret
    (Kubeflow's ``mlpipeline-minio-artifact`` layout: ``accesskey``, ``secretkey``)."""
    defaults = PROFILES["full"]

    def interest_pipeline(
        registry: str,
        dataset: str = defaults.dataset,
        variants: list = defaults.variant_specs(),
        preprocess_config: dict = defaults.preprocess_config,
        beam_args: list[str] = [],  # noqa: B006 - KFP defaults are literal values
        model_overrides: list[str] = list(defaults.model_overrides),  # noqa: B006
        train_config: dict = defaults.train_config,
        gate_config: dict = defaults.gate_config,
        baseline: str = "baseline",
        model_name: str = "interest",
        torch_threads: int = 0,
        accelerator_type: str = "",
        accelerator_count: int = 0,
        cluster: dict = {},  # noqa: B006 - KFP defaults are literal values
        gpu_tolerations: list = [],  # noqa: B006 - KFP defaults are literal values
        gpu_node_selector: dict = {},  # noqa: B006 - KFP defaults are literal values
        warm_start: bool = False,
    ) -> Outputs:
        """``registry``: model registry root (a directory or gs://bucket/prefix); ``dataset``: ml-1m, ml-100k or an
        events file path/URI; ``variants``: trainer.variants specs ({name, preset, set, seed}); ``*_config``: fields of PreprocessConfig,
        TrainConfig (over each preset's) and GateConfig; ``model_overrides``: ModelConfig key=value for every
        variant; ``baseline``: the variant changes are measured against; ``torch_threads``: threads per
        train/evaluate task (0: OMP_NUM_THREADS, i.e. the task's CPU request); ``accelerator_type``/
        ``accelerator_count``: GPUs of each train task's pod, e.g. nvidia.com/gpu on Kubeflow or NVIDIA_L4 on
        Vertex AI (torchrun runs one process per GPU; empty/0: CPU); ``cluster``: ClusterConfig fields to train
        each variant as a multi-node PyTorchJob or Vertex job instead; ``gpu_tolerations``/``gpu_node_selector``:
        Kubernetes tolerations (a list of {key, operator, value, effect}) and node selector ({label: value}) of
        every train pod and PyTorchJob replica, for a tainted GPU node pool; ``warm_start``: every variant starts
        from the registry's champion (items matched by id; the architecture must match), else from scratch."""
        # Resolved by the orchestrator in each task: where the run's own files go (components.artifacts.run_root).
        run_place = {"pipeline_root": dsl.PIPELINE_ROOT_PLACEHOLDER, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        finale = None
        if for_cluster:
            finale = _resources(record_run(baseline=baseline, gate_config=gate_config, **run_place), "Record run", *SMALL)
            finale.set_caching_options(enable_caching=False)
        with dsl.ExitHandler(finale, name="run") if finale else contextlib.nullcontext():
            prep = _resources(preprocess(dataset=dataset, config=preprocess_config, beam_args=beam_args),
                              "Preprocess events", *PREPROCESS)
            # The events behind a dataset name or path can change between runs: never reuse an old output.
            prep.set_caching_options(enable_caching=False)

            with dsl.ParallelFor(variants, name="variants", parallelism=parallelism) as variant:
                trained = _resources(
                    # The accelerator and scheduling parameters also go in as plain arguments: the KFP compiler
                    # does not pass parameters that only resource or platform settings use into the loop's
                    # sub-DAG (its inputs would lack them).
                    train(data=prep.outputs["data"], variant=variant, model_overrides=model_overrides,
                          train_config=train_config, torch_threads=torch_threads, accelerator=accelerator_type,
                          gpus=accelerator_count, cluster=cluster, tolerations=gpu_tolerations,
                          node_selector=gpu_node_selector, image=image, warm_start=warm_start, registry=registry,
                          model_name=model_name, **run_place),
                    "Train variant", *TRAIN,
                ).set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
                kubernetes.add_toleration_json(trained, gpu_tolerations)
                kubernetes.add_node_selector_json(trained, gpu_node_selector)
                # NCCL and DataLoader workers share memory through /dev/shm, which is 64 MB in a container. Its
                # pages count against the memory limit, which bounds it.
                kubernetes.empty_dir_mount(trained, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
                evaluated = _resources(
                    evaluate(model=trained.outputs["model"], data=prep.outputs["data"], torch_threads=torch_threads,
                             **run_place),
                    "Evaluate variant", *EVALUATE,
                )
                if for_cluster:
                    trained.set_retry(**RETRY)
                    evaluated.set_retry(**RETRY)

            # The production champion, judged on this run's data (runs while the variants train).
            champion = _resources(
                evaluate_champion(data=prep.outputs["data"], registry=registry, model_name=model_name,
                                  torch_threads=torch_threads),
                "Evaluate production champion", *EVALUATE,
            )
            # It reads the registry's current champion, which other runs move: never reuse an old result.
            champion.set_caching_options(enable_caching=False)
            decision = _resources(
                select_and_gate(
                    models=dsl.Collected(trained.outputs["model"]),
                    evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                    champion_evaluation=champion.outputs["champion_evaluation"],
                    baseline=baseline, gate_config=gate_config,
                ),
                "Select candidate and gate", *SMALL,
            )
            decision.set_caching_options(enable_caching=False)

            # On the task's single `Output`: kfp.local evaluates a condition on a named output as False, silently.
            with dsl.If(decision.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a KFP condition, not a bool
                pushed = _resources(
                    push(candidate=decision.outputs["candidate"],
                         candidate_evaluation=decision.outputs["candidate_evaluation"],
                         evidence=decision.outputs["evidence"], blessing=decision.outputs["blessing"],
                         data=prep.outputs["data"], registry=registry, model_name=model_name,
                         gate_config=gate_config, baseline=baseline),
                    "Push to registry", *SMALL,
                )
                pushed.set_caching_options(enable_caching=False)  # a side effect on the registry

            summary = _resources(
                report(models=dsl.Collected(trained.outputs["model"]),
                       evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                       blessing=decision.outputs["blessing"], baseline=baseline),
                "Report", *SMALL,
            )
        tasks = [prep, trained, evaluated, champion, decision, pushed, summary, *([finale] if finale else [])]
        for task in tasks:
            task.set_container_image(image)
            if s3_endpoint:
                task.set_env_variable("AWS_ENDPOINT_URL", s3_endpoint)
            if s3_secret:
                kubernetes.use_secret_as_env(task, s3_secret, S3_SECRET_KEYS)
        if for_cluster:
            return None  # a pipeline with an exit handler returns no outputs; record_run's summary stands in
        return Outputs(
            report_html=summary.outputs["html"], report_markdown=summary.outputs["markdown"],
            comparison=summary.outputs["comparison"], report_plots=summary.outputs["plots"],
            blessing=decision.outputs["blessing"], candidate=decision.outputs["candidate"],
            tensorboard=dsl.Collected(trained.outputs["tensorboard"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
        )

    if for_cluster:
        del interest_pipeline.__annotations__["return"]
    return dsl.pipeline(name=PIPELINE_NAME, description="Train, compare, gate and ship Transformer user-interest "
                        "models.")(interest_pipeline)


def compile_pipeline(output: str | Path, image: str = IMAGE, parallelism: int = 0, for_cluster: bool = False,
                     s3_endpoint: str = "", s3_secret: str = "") -> Path:
    """Write the pipeline as KFP IR YAML: for kfp.local, or ``for_cluster`` for Kubeflow Pipelines and Vertex AI
    Pipelines (create_pipeline)."""
    from kfp import compiler

    require(parallelism >= 0, "--parallelism", f"must be >= 0 (0: every variant at once), got {parallelism}")
    require(not s3_endpoint or s3_endpoint.startswith(("http://", "https://")), "--s3-endpoint",
            f"must be an http(s):// URL, got {s3_endpoint!r}")
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    kfp_compiler = compiler.Compiler()
    kfp_compiler.compile(create_pipeline(image=image, parallelism=parallelism, for_cluster=for_cluster,
                                         s3_endpoint=s3_endpoint, s3_secret=s3_secret), package_path=str(path))
    return path
