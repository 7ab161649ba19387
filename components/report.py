"""Component: the comparison report of every variant (HTML page + Markdown for the KFP UI)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    blessing: Input[Artifact],
    data: Input[Dataset],
    baseline_preset: str,
    html: Output[HTML],
    markdown: Output[Markdown],
):
    """Recall@10, NDCG@10, norms, parameters, time, tokens/s and the change against the baseline per variant,
    the gate's checks and the training curves."""
    from components.artifacts import by_variant
    from pipelines.report import write_report

    write_report(by_variant(models, "model"), by_variant(evaluations, "evaluation"), blessing.path, data.path,
                 baseline_preset, html.path, markdown.path)
