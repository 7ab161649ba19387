"""Component: the exit handler's task: record how the run ended, and what every finished variant reached."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def record_run(
    status: dsl.PipelineTaskFinalStatus,
    pipeline_root: str,
    run_id: str,
    baseline: str,
    summary: Output[Markdown],
):
    """Runs last, whether the run succeeded, failed or was cancelled (``dsl.ExitHandler``). Writes ``run.json``
    (state, error, finished variants with their validation and test metrics) and ``run.md`` to the run's own place
    (components.artifacts.run_root), and the same Markdown as this task's artifact for the KFP UI: when one variant
    failed for good, the gate and the report never ran, and this is where the others' results are found."""
    import json
    from datetime import UTC, datetime

    from components.artifacts import finished_variants, run_root
    from core import storage

    root = run_root(pipeline_root, run_id)
    variants = finished_variants(root)
    record = {"state": status.state, "pipeline_job": status.pipeline_job_resource_name,
              "error": {"code": status.error_code, "message": status.error_message} if status.error_code else None,
              "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_root": root,
              "variants": variants}
    base = variants.get(baseline, {}).get("test", {}).get("recall@10")
    lines = [f"# Run {run_id}: {status.state}", ""]
    if record["error"]:
        lines += [f"Error: {status.error_message}", ""]
    lines += [f"{len(variants)} variant(s) finished (trained and evaluated).", "",
              "| variant | valid Recall@10 | test Recall@10 | test NDCG@10 | vs baseline |", "|---|---:|---:|---:|---:|"]
    for name, v in sorted(variants.items(), key=lambda item: -item[1]["valid"].get("recall@10", 0.0)):
        test = v["test"].get("recall@10")
        change = f"{(test / base - 1) * 100:+.1f}%" if base and test is not None else "-"
        lines.append(f"| {name} | {v['valid'].get('recall@10', float('nan')):.4f} | "
                     f"{test if test is not None else float('nan'):.4f} | {v['test'].get('ndcg@10', float('nan')):.4f} "
                     f"| {change} |")
    text = "\n".join(lines) + "\n"
    storage.write_json(storage.join(root, "run.json"), record)
    storage.write_text(storage.join(root, "run.md"), text)
    with open(summary.path, "w") as f:
        f.write(text)
    summary.metadata.update(state=status.state, variants=sorted(variants), run_root=root)
    print(json.dumps({"state": status.state, "variants": sorted(variants), "run_root": root}))
