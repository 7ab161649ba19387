"""Run directories through the CLI: readers refuse incomplete or damaged inputs in one line (exit 2) and a second
writer of any stage's output fails at once naming the first (exit 1), locally and on GCS, never mixing outputs.
(Kills mid-run: tests/pipelines/test_preprocess_command.py and tests/trainer/test_train.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from core import contract, rundir, storage
from pipelines import cli
from tests.support.data import write_preprocessed

# A tiny model (conftest.py of tests/trainer) as `interest train` flags.
TINY = ["--set", "d_model=16", "--set", "n_layer=1", "--set", "n_head=2", "--set", "max_len=12", "--set",
        "batch_size=6", "--set", "dropout=0.0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(a complete preprocessed data directory, a model trained on it for 2 steps)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_preprocessed(root / "data")
    assert cli.main(["train", "--data", str(data), "--output", str(root / "model"), *TINY, "--max-steps", "2"]) == 0
    return data, root / "model"


def one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def data_copy(data: Path, where: Path, damage: str | None = None) -> Path:
    copy = where / "data"
    shutil.copytree(data, copy)
    if damage == "no marker":
        (copy / "_SUCCESS.json").unlink()
    elif damage == "missing shard":
        (copy / "sequences-00001-of-00002.parquet").unlink()
    return copy


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("damage, missing", [
    ("no marker", "incomplete: no _SUCCESS.json"),
    ("missing shard", "incomplete: sequences-00001-of-00002.parquet is listed in _SUCCESS.json but missing"),
])
def test_train_and_evaluate_refuse_incomplete_data_naming_the_missing_piece(trained, tmp_path, capsys, command,
                                                                           damage, missing):
    data = data_copy(trained[0], tmp_path, damage)
    argv = (["train", "--data", str(data), "--output", str(tmp_path / "out"), *TINY, "--max-steps", "2"]
            if command == "train" else
            ["evaluate", "--model", str(trained[1]), "--data", str(data), "--output", str(tmp_path / "out")])
    assert cli.main(argv) == 2
    assert one_error_line(capsys).startswith(f"interest {command}: error: --data: {data}: {missing}")
    assert not (tmp_path / "out").exists() or not rundir.has_content(str(tmp_path / "out"))


def corrupt_shard(data: Path) -> str:
    """Garbage in a shard whose marker entry is rewritten to match it: complete by size and digest, unreadable."""
    shard = data / "sequences-00000-of-00002.parquet"
    garbage = os.urandom(shard.stat().st_size)
    shard.write_bytes(garbage)
    marker = json.loads((data / "_SUCCESS.json").read_text())
    marker["files"][shard.name].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    (data / "_SUCCESS.json").write_text(json.dumps(marker))
    rundir.open_complete(str(data))
    return str(shard)


def corrupt_champion(registry: Path) -> str:
    (registry / "interest").mkdir(parents=True)
    (registry / "interest" / "champion.json").write_text('{"version": "v1", "path": ')
    return str(registry / "interest" / "champion.json")


@pytest.mark.parametrize("case", ["corrupt shard", "corrupt champion.json", "YAML syntax error"])
def test_damaged_files_are_one_line_errors_naming_the_file(trained, tmp_path, capsys, case):
    data, model = trained
    if case == "corrupt shard":
        data = data_copy(data, tmp_path)
        bad_file = corrupt_shard(data)
        argv = ["evaluate", "--model", str(model), "--data", str(data), "--output", str(tmp_path / "out")]
        says = "is not a readable Parquet shard"
    elif case == "corrupt champion.json":
        bad_file = corrupt_champion(tmp_path / "registry")
        argv = ["evaluate", "--model", f"registry:{tmp_path / 'registry'}", "--data", str(data), "--output",
                str(tmp_path / "out")]
        says = "the champion pointer is not valid JSON"
    else:
        bad_file = str(tmp_path / "train.yaml")
        Path(bad_file).write_text("train:\n  lr: [0.1\n  epochs: 3\n")
        argv = ["train", "--data", str(data), "--output", str(tmp_path / "out"), "--config", bad_file]
        says = "not valid JSON/YAML: line 3"
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"interest {argv[0]}: error: ") and bad_file in line and says in line, line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def stage_inputs(trained, tmp_path_factory) -> dict[str, str]:
    """What each stage reads: an events file, data, a model, and a variant with a test evaluation and a blessing."""
    from release.gate import GateConfig, decide
    from release.records import Run
    from trainer.evaluate import evaluate

    root = tmp_path_factory.mktemp("inputs")
    (root / "events.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{n % 7},i{n % 5},{1_600_000_000 + n}\n" for n in range(60)))
    data, model = trained
    evaluate(str(model), str(data), "test", str(root / "eval-test"))
    blessing = decide([Run.load(name="baseline", model_dir=str(model), test_dir=str(root / "eval-test"))], None, None,
                      GateConfig(min_recall_at_10=0.0))
    storage.write_json(str(root / "blessing.json"), blessing.to_json())
    return {"events": str(root / "events.csv"), "data": str(data), "model": str(model),
            "variant": f"name=baseline,model={model},test={root / 'eval-test'}", "blessing": str(root / "blessing.json")}


# Per stage: its command line for an output (the first writer's, then the second's: other settings, so a mix
# would show), the stage function whose call is its real work, and what the first writer's output holds.
STAGES = {
    "preprocess": (lambda i, out, first: ["preprocess", "--input", i["events"], "--output", out, "--set",
                                          "min_item_count=1", "--set", f"num_shards={3 if first else 2}"],
                   ("preprocessing.pipeline", "build"),
                   lambda c: storage.read_json(c.path("preprocess_config.json"))["num_shards"] == 3),
    "train": (lambda i, out, first: ["train", "--data", i["data"], "--output", out, *TINY, "--max-steps",
                                     "2" if first else "3"],
              ("trainer.train", "Trainer"),
              lambda c: storage.read_json(c.path("summary.json"))["steps"] == 2),
    "evaluate": (lambda i, out, first: ["evaluate", "--model", i["model"], "--data", i["data"], "--output", out,
                                        "--split", "test" if first else "valid"],
                 ("trainer.evaluate", "evaluate_model"),
                 lambda c: storage.read_json(c.path("metrics.json"))["split"] == "test"),
    "report": (lambda i, out, first: ["report", "--variant", i["variant"], "--blessing", i["blessing"],
                                      "--output", out, "--baseline", "baseline" if first else "none"],
               ("release.report", "write_report"),
               lambda c: "vs baseline [95% CI]" in storage.read_text(c.path("report.md"))),
}


def files_under(target: str) -> set[str]:
    return {storage.relative(target, uri) for uri in storage.list_files(target)}


@pytest.mark.parametrize("backend", ["local", "gcs"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_second_writer_fails_at_once_naming_the_first_and_the_output_is_never_a_mix(
        stage, backend, stage_inputs, tmp_path, monkeypatch, capsys, request):
    """The first `interest STAGE` runs in a thread that pauses right after taking the output's lock (a wrapper of
    core.rundir.locked that only that thread waits in); the second, with other settings, runs meanwhile in this
    thread: exit 1, one line naming the holder, none of the stage's work done. The first then publishes an output
    that is whole and all its own. On GCS the lock is the _LOCK.json precondition (the proxy enforces it)."""
    argv, (module, work), own = STAGES[stage]
    if backend == "gcs":
        request.getfixturevalue("flaky_gcs")(fault_rate=0.0)
        out = f"{request.getfixturevalue('gcs_bucket')}/{stage}"
    else:
        out = str(tmp_path / stage)
    real_locked, held, release = rundir.locked, threading.Event(), threading.Event()

    @contextlib.contextmanager
    def locked(target, *args, **kwargs):
        with real_locked(target, *args, **kwargs):
            if threading.current_thread().name == "first-writer":
                held.set()
                assert release.wait(120)
            yield

    monkeypatch.setattr(rundir, "locked", locked)
    worked_in = []
    stage_work = getattr(__import__(module, fromlist=[work]), work)
    monkeypatch.setattr(f"{module}.{work}", lambda *a, **k: (worked_in.append(threading.current_thread().name),
                                                             stage_work(*a, **k))[1])
    codes = []
    first = threading.Thread(target=lambda: codes.append(cli.main(argv(stage_inputs, out, True))),
                             name="first-writer")
    first.start()
    try:
        assert held.wait(120)
        assert cli.main(argv(stage_inputs, out, False)) == 1
        line = one_error_line(capsys)
        assert line.startswith(f"interest {stage}: failed: OutputLocked: {out} is being written by pid {os.getpid()}")
        assert worked_in == [] and files_under(out) <= {rundir.LOCK}
    finally:
        release.set()
        first.join(timeout=300)
    assert codes == [0] and "MainThread" not in worked_in
    complete = rundir.open_complete(out)
    assert own(complete)
    working = [f"{name}/" for name in contract.MODEL_WORKING_STATE]
    prefix = f"{complete.manifest['root']}/" if complete.manifest["root"] else ""
    assert {f for f in files_under(out) if not f.startswith(tuple(working))} == {
        rundir.MARKER, *(prefix + name for name in complete.files)}


@pytest.mark.parametrize("target", ["model", "data"])
def test_evaluate_onto_a_model_or_data_directory_is_refused_and_deletes_nothing(trained, tmp_path, capsys, target):
    data, model = trained
    victim = tmp_path / target
    shutil.copytree(model if target == "model" else data, victim)
    before = rundir.open_complete(str(victim)).manifest
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--output", str(victim)]
    assert cli.main(argv) == 2
    assert "pass --overwrite to replace it" in one_error_line(capsys)
    assert rundir.open_complete(str(victim)).manifest == before  # untouched, every digest still holds
    assert cli.main([*argv, "--overwrite"]) == 0  # asked for: replaced by the evaluation
    assert rundir.open_complete(str(victim), contract.EVALUATION_KIND)


def test_train_onto_a_data_directory_is_refused_before_training(trained, tmp_path, capsys):
    data, _ = trained
    victim = tmp_path / "data"
    shutil.copytree(data, victim)
    argv = ["train", "--data", str(data), "--output", str(victim), *TINY, "--max-steps", "2"]
    assert cli.main(argv) == 2
    assert "holds 'preprocessed-data' output, not 'model'" in one_error_line(capsys)
    rundir.open_complete(str(victim), contract.DATA_KIND)



def test_report_onto_a_model_directory_is_refused_and_deletes_nothing(trained, stage_inputs, tmp_path, capsys):
    victim = tmp_path / "model"
    shutil.copytree(trained[1], victim)
    before = rundir.open_complete(str(victim)).manifest
    argv = ["report", "--variant", stage_inputs["variant"], "--baseline", "none", "--blessing",
            stage_inputs["blessing"], "--output", str(victim)]
    assert cli.main(argv) == 2
    assert "holds 'model' output, not 'report'" in one_error_line(capsys)
    assert rundir.open_complete(str(victim)).manifest == before
    assert cli.main([*argv, "--overwrite"]) == 0
    assert rundir.open_complete(str(victim), contract.REPORT_KIND)
