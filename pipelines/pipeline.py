"""The Kubeflow Pipelines v2 DAG: preprocess, train and evaluate every variant, gate, push, report.

::

    preprocess ─┬─> ParallelFor(variant) [ train ──> evaluate ] ──> Collected ─┬─> select_and_gate ─┬─> If(blessed): push
                └─> evaluate_champion (the registry's champion on this run's data) ─┘                   └─> report

``create_pipeline(image, parallelism)`` builds the ``@dsl.pipeline`` function; what to train and where to put it
are the pipeline's runtime parameters, so one compiled YAML serves every run (``pipelines/profiles.py`` fills
them). Known KFP limits shape it (shared/PLATFORM.md and below): the gate runs *after* the loop over everything
collected and ``dsl.If`` reads that task's single ``Output`` (kfp.local evaluates a condition on a loop item or
on a *named* output as False, silently); parameters used only by resource settings inside the loop are also
passed as arguments (the compiler leaves them out of the loop's inputs); ints inside dicts come back as floats
(the config dataclasses convert them back); no argument may hold a null (protobuf values have none).
"""

from pathlib import Path
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Model

from components.evaluate import evaluate
from components.evaluate_champion import evaluate_champion
from components.image import IMAGE
from components.preprocess import preprocess
from components.push import push
from components.report import report
from components.select_and_gate import select_and_gate
from components.train import train
from core.configs import require
from pipelines.profiles import PROFILES

PIPELINE_NAME = "interest-pipeline"
# CPU/memory requests per step (GPUs come from the parameters). Each task also gets OMP_NUM_THREADS = its CPU
# request: inside a pod, torch and numpy would otherwise start one thread per core of the whole node.
SMALL = ("1", "2G")  # select_and_gate, push, report
PREPROCESS = ("2", "8G")  # Beam DirectRunner on ML-1M peaks at about 0.5 GB; room for larger logs
TRAIN = ("4", "16G")  # one variant; a multi-GPU pod runs one process per GPU on these
EVALUATE = ("2", "8G")  # full-catalogue ranking of every user


class Outputs(NamedTuple):
    report_html: HTML  # the comparison page
    report_markdown: Markdown  # the same, rendered by the KFP UI
    comparison: Artifact  # comparison.json: the report's numbers (what `interest run` prints)
    blessing: Artifact  # blessing.json: every gate check with value, threshold and verdict, every judged file's sha256
    candidate: Model  # the selected variant's model (pushed when blessed)
    tensorboard: list[Artifact]  # one TensorBoard log directory per variant
    evaluations: list[Artifact]  # per variant: valid/ and test/ metrics.json + per_user.parquet


def _resources(task: dsl.PipelineTask, name: str, cpu: str, memory: str) -> dsl.PipelineTask:
    task.set_display_name(name).set_cpu_request(cpu).set_memory_request(memory)
    return task.set_env_variable("OMP_NUM_THREADS", cpu)


def create_pipeline(image: str = IMAGE, parallelism: int = 0):
    """The pipeline function, with every task on ``image``; ``parallelism`` caps how many variants train at
    once (0: all of them)."""
    defaults = PROFILES["full"]

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, compare, gate and ship Transformer user-interest models.")
    def interest_pipeline(
        registry: str,
        dataset: str = defaults.dataset,
        variants: list = defaults.variant_specs(),
        preprocess_config: dict = defaults.preprocess_config,
        beam_args: list[str] = [],  # noqa: B006 - KFP defaults are literal values
        model_overrides: list[str] = list(defaults.model_overrides),  # noqa: B006
        train_config: dict = defaults.train_config,
        gate_config: dict = defaults.gate_config,
        baseline_preset: str = "baseline",
        model_name: str = "interest",
        torch_threads: int = 0,
        accelerator_type: str = "",
        accelerator_count: int = 0,
        cluster: dict = {},  # noqa: B006 - KFP defaults are literal values
        warm_start: bool = False,
    ) -> Outputs:
        """``registry``: model registry root (a directory or gs://bucket/prefix); ``dataset``: ml-1m, ml-100k or an
        events file path/URI; ``variants``: trainer.variants specs ({name, preset, set, seed}); ``*_config``: fields of PreprocessConfig,
        TrainConfig (over each preset's) and GateConfig; ``model_overrides``: ModelConfig key=value for every
        variant; ``baseline_preset``: the variant changes are measured against; ``torch_threads``: threads per
        train/evaluate task (0: OMP_NUM_THREADS, i.e. the task's CPU request); ``accelerator_type``/
        ``accelerator_count``: GPUs of each train task's pod, e.g. nvidia.com/gpu on Kubeflow or NVIDIA_L4 on
        Vertex AI (torchrun runs one process per GPU; empty/0: CPU); ``cluster``: ClusterConfig fields to train
        each variant as a multi-node PyTorchJob or Vertex job instead; ``warm_start``: every variant starts from
        the registry's champion (items matched by id; the architecture must match), else from scratch."""
        prep = _resources(
            preprocess(dataset=dataset, config=preprocess_config, beam_args=beam_args), "Preprocess events", *PREPROCESS
        )
        # The events behind a dataset name or path can change between runs: never reuse an old output.
        prep.set_caching_options(enable_caching=False)

        with dsl.ParallelFor(variants, name="variants", parallelism=parallelism) as variant:
            trained = _resources(
                # The accelerator parameters also go in as plain arguments: the KFP compiler does not pass
                # parameters that only resource settings use into the loop's sub-DAG (its inputs would lack them).
                train(data=prep.outputs["data"], variant=variant, model_overrides=model_overrides,
                      train_config=train_config, torch_threads=torch_threads, accelerator=accelerator_type,
                      gpus=accelerator_count, cluster=cluster, image=image, warm_start=warm_start,
                      registry=registry, model_name=model_name),
                "Train variant", *TRAIN,
            ).set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
            evaluated = _resources(
                evaluate(model=trained.outputs["model"], data=prep.outputs["data"], torch_threads=torch_threads),
                "Evaluate variant", *EVALUATE,
            )

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
                baseline_preset=baseline_preset, gate_config=gate_config,
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
                     data=prep.outputs["data"], registry=registry, model_name=model_name),
                "Push to registry", *SMALL,
            )
            pushed.set_caching_options(enable_caching=False)  # a side effect on the registry

        summary = _resources(
            report(models=dsl.Collected(trained.outputs["model"]),
                   evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                   blessing=decision.outputs["blessing"], baseline_preset=baseline_preset),
            "Report", *SMALL,
        )
        for task in (prep, trained, evaluated, champion, decision, pushed, summary):
            task.set_container_image(image)
        return Outputs(
            report_html=summary.outputs["html"], report_markdown=summary.outputs["markdown"],
            comparison=summary.outputs["comparison"],
            blessing=decision.outputs["blessing"], candidate=decision.outputs["candidate"],
            tensorboard=dsl.Collected(trained.outputs["tensorboard"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
        )

    return interest_pipeline


def compile_pipeline(output: str | Path, image: str = IMAGE, parallelism: int = 0) -> Path:
    """Write the pipeline as KFP IR YAML (runs on Kubeflow Pipelines and Vertex AI Pipelines)."""
    from kfp import compiler

    require(parallelism >= 0, "--parallelism", f"must be >= 0 (0: every variant at once), got {parallelism}")
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    kfp_compiler = compiler.Compiler()
    kfp_compiler.compile(create_pipeline(image=image, parallelism=parallelism), package_path=str(path))
    return path
