"""Component: the exit handler's task: record how the pipeline run ended, and what every finished run reached."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def record_run(
    status: dsl.PipelineTaskFinalStatus,
    pipeline_root: str,
    run_id: str,
    baseline: str,
    gate_config: dict,
    summary: Output[Markdown],
):
    """Runs last, whether the pipeline run succeeded, failed or was cancelled (``dsl.ExitHandler``). Writes
    ``run.json`` (state, error, finished runs with their variant, seed, validation and test metrics) and ``run.md``
    (the finished variants compared with the ``baseline`` variant: the report's ``release.comparison`` table, with
    the bootstrap settings of ``gate_config``) to the pipeline run's own place (components.artifacts.run_root),
    and the same Markdown as this task's artifact for the KFP UI: when one run failed for good, the gate and the
    report never ran, and this is where the others' results are found."""
    import json
    from datetime import UTC, datetime

    from components.artifacts import finished_runs, run_root
    from core import contract, storage
    from release.comparison import Bootstrap, Comparison, summary_table

    root = run_root(pipeline_root, run_id)
    runs = finished_runs(root)
    record = {"state": status.state, "pipeline_job": status.pipeline_job_resource_name,
              "error": {"code": status.error_code, "message": status.error_message} if status.error_code else None,
              "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_root": root,
              "runs": {r.name: {"variant": r.variant, "seed": r.seed, "valid": dict(r.valid), "test": dict(r.test)}
                       for r in runs}}
    lines = [f"# Run {run_id}: {status.state}", ""]
    if record["error"]:
        lines += [f"Error: {status.error_message}", ""]
    lines += [f"{len(runs)} run(s) finished (trained and evaluated).", ""]
    if runs:
        comparison = Comparison.of(runs, baseline, Bootstrap.of(gate_config)).to_json()
        comparison["variants"].sort(key=lambda v: -(v["valid_recall@10"]["mean"] or 0.0))  # best first
        header, rows = summary_table(comparison)
        lines += ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2),
                  *("| " + " | ".join(row) + " |" for row in rows)]
    text = "\n".join(lines) + "\n"
    storage.write_json(storage.join(root, contract.RUN_RECORD), record)
    storage.write_text(storage.join(root, contract.RUN_MARKDOWN), text)
    with open(summary.path, "w") as f:
        f.write(text)
    summary.metadata.update(state=status.state, runs=sorted(record["runs"]), run_root=root)
    print(json.dumps({"state": status.state, "runs": sorted(record["runs"]), "run_root": root}))
