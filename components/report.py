"""Component: the comparison report of every variant (HTML page + Markdown for the KFP UI)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    blessing: Input[Artifact],
    baseline_preset: str,
    html: Output[HTML],
    markdown: Output[Markdown],
):
    """Recall@10, NDCG@10, norms, parameters, time, tokens/s and the change against the baseline per variant,
    the gate's checks and the training curves (release.report)."""
    import json

    from components.artifacts import load_variants
    from release.records import Blessing
    from release.report import write_report

    with open(blessing.path) as f:
        decision = Blessing.from_json(json.load(f), blessing.path)
    write_report(load_variants(models, evaluations), decision, html.path, markdown.path, baseline=baseline_preset)
