"""The release path attacked the way a careless colleague, a crash or a concurrent job would: each test here
failed on the code before blessings were bound to their files and versions were claimed and published whole."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest

from core import contract, rundir, storage
from core.configs import ConfigError
from pipelines.cli import main
from release import registry
from release.gate import BlessingInvalid
from release.records import Blessing
from tests.support.fake_artifacts import (
    LENIENT,
    LENIENT_POLICY,
    STRICT,
    blessing_for,
    policy_flags,
    write_run,
)


def write_blessing(path: Path, blessing: Blessing | dict) -> str:
    path.write_text(json.dumps(blessing.to_json() if isinstance(blessing, Blessing) else blessing))
    return str(path)


def test_weights_retrained_after_the_gate_are_refused(tmp_path, capsys):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    blessing = write_blessing(tmp_path / "b.json", blessing_for(model_dir, eval_dir))
    # Retrained after the gate: a new model.pt published in the same directory (a complete, valid export).
    with rundir.writing(model_dir, "model") as staging:
        for name in ("model_config.json", "train_config.json", "vocab.json", "summary.json"):
            storage.copy_file(f"{model_dir}/{name}", staging.join(name))
        storage.write_bytes(staging.join("model.pt"), b"other weights")
    assert main(["push", "--blessing", blessing, "--registry", str(tmp_path / "registry"), *policy_flags(LENIENT)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pt (candidate_model) is not the file the gate judged" in err[0]
    assert not (tmp_path / "registry").exists()


def test_a_test_evaluation_changed_after_the_gate_is_refused(tmp_path):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    blessing = blessing_for(model_dir, eval_dir)
    _, other_eval = write_run(tmp_path, "other", seed=7, hit_rate=0.9)
    rundir.copy_complete(other_eval, str(tmp_path / "swapped"))
    with pytest.raises(BlessingInvalid, match="metrics.json \\(candidate_test\\)"):
        registry.push(blessing, str(tmp_path / "registry"), locations={"candidate_test": str(tmp_path / "swapped")}, policy=LENIENT_POLICY)
    assert not (tmp_path / "registry").exists()


def test_a_verdict_edited_by_hand_is_refused(tmp_path, capsys):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    refused = blessing_for(model_dir, eval_dir, blessed=False).to_json()
    forged = write_blessing(tmp_path / "forged.json", {**refused, "blessed": True})
    assert main(["push", "--blessing", forged, "--registry", str(tmp_path / "registry"), *policy_flags(STRICT)]) == 3
    assert "verdict does not follow from the checks: blessed=True but min_recall@10" in capsys.readouterr().err
    # Flipping the failed check to "pass" as well does not help: each check is derived again from the files.
    checks = [{**c, "passed": True} for c in refused["checks"]]
    forged = write_blessing(tmp_path / "forged2.json", {**refused, "blessed": True, "checks": checks})
    assert main(["push", "--blessing", forged, "--registry", str(tmp_path / "registry"), *policy_flags(STRICT)]) == 3
    assert "check min_recall@10: the blessing says pass" in capsys.readouterr().err
    assert not (tmp_path / "registry").exists()


def test_a_document_that_is_not_a_blessing_is_a_clear_error(tmp_path, capsys):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    bare = write_blessing(tmp_path / "bare.json", {"blessed": True, "champion_generation": 0,
                                                     "candidate": {"name": "m", "model_dir": model_dir}})
    assert main(["push", "--blessing", bare, "--registry", str(tmp_path / "registry")]) == 2
    assert "not a blessing written by `interest gate`" in capsys.readouterr().err


def _push_same_version(barrier, results, root, model_dir, eval_dir):
    barrier.wait(timeout=60)
    try:
        results.put((model_dir, registry.push(blessing_for(model_dir, eval_dir), root, version="v1", policy=LENIENT_POLICY).outcome))
    except rundir.OutputLocked as exc:
        results.put((model_dir, f"locked: {exc}"))
    except registry.VersionConflict as exc:
        results.put((model_dir, f"conflict: {exc}"))


def test_two_pushes_of_different_models_to_one_version_never_mix(tmp_path):
    root = str(tmp_path / "registry")
    runs = [write_run(tmp_path, f"m{i}", seed=i) for i in range(2)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_push_same_version, args=(barrier, results, root, *run)) for run in runs]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    winners = [m for m, outcome in outcomes.items() if outcome == "pushed"]
    assert len(winners) == 1, outcomes
    (loser,) = set(outcomes) - set(winners)
    assert outcomes[loser].startswith(("locked: ", "conflict: ")) and "v1" in outcomes[loser]
    version = rundir.open_complete(f"{root}/interest/v1")
    assert storage.read_bytes(version.path("model.pt")) == Path(winners[0], "model.pt").read_bytes()
    assert version.manifest["model_sha256"] and registry.read_champion(root).version == "v1"


def test_two_pushes_to_one_version_on_gcs_never_mix(flaky_gcs, gcs_bucket, tmp_path):
    flaky_gcs(fault_rate=0.0)  # the bare emulator ignores preconditions; the proxy enforces them as GCS does
    root = f"{gcs_bucket}/registry"
    runs = [write_run(tmp_path, f"m{i}", seed=i) for i in range(2)]
    barrier, outcomes = threading.Barrier(2), {}

    def push(model_dir, eval_dir):
        barrier.wait(timeout=60)
        try:
            outcomes[model_dir] = registry.push(blessing_for(model_dir, eval_dir), root, version="v1", policy=LENIENT_POLICY).outcome
        except (rundir.OutputLocked, registry.VersionConflict, registry.ChampionChanged) as exc:
            outcomes[model_dir] = type(exc).__name__

    threads = [threading.Thread(target=push, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes.values()).count("pushed") == 1, outcomes
    winner = next(m for m, outcome in outcomes.items() if outcome == "pushed")
    version = rundir.open_complete(f"{root}/interest/v1")
    assert storage.read_bytes(version.path("model.pt")) == Path(winner, "model.pt").read_bytes()


def _push_and_die(root, model_dir, eval_dir, blessing_json):
    """A push whose process is SIGKILLed after copying its third file into the version."""
    copied = []
    real_copy = storage.copy_file

    def copy_then_die(src, dst):
        real_copy(src, dst)
        copied.append(dst)
        if len(copied) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    storage.copy_file = copy_then_die
    registry.push(Blessing.from_json(json.loads(blessing_json)), root, version="v1", policy=LENIENT_POLICY)


def test_a_push_killed_half_way_is_never_served_and_the_rerun_completes_it(tmp_path):
    root = str(tmp_path / "registry")
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    blessing = blessing_for(model_dir, eval_dir)
    child = multiprocessing.get_context("fork").Process(
        target=_push_and_die, args=(root, model_dir, eval_dir, json.dumps(blessing.to_json())))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert registry.list_versions(root) == [{"version": "v1", "status": "incomplete", "champion": False}]
    assert registry.read_champion(root) is None  # the pointer never names an incomplete version
    result = registry.push(blessing, root, version="v1", policy=LENIENT_POLICY)
    assert result.outcome == "pushed"
    assert registry.list_versions(root) == [{"version": "v1", "status": "complete", "champion": True}]
    rundir.open_complete(f"{root}/interest/v1")


def test_the_champion_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """champion.json stores the version relative to the registry root: a push made with a relative registry
    path is read correctly from elsewhere (and the registry can move)."""
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    (tmp_path / "ops").mkdir()
    monkeypatch.chdir(tmp_path / "ops")
    registry.push(blessing_for(model_dir, eval_dir), "../registry", version="v1", policy=LENIENT_POLICY)
    pointer = json.loads((tmp_path / "registry" / "interest" / "champion.json").read_text())
    assert pointer["path"] == "interest/v1" and "uri" not in pointer
    monkeypatch.chdir(tmp_path / "m")
    champion = registry.read_champion(str(tmp_path / "registry"))
    assert Path(champion.uri) == tmp_path / "registry" / "interest" / "v1"
    assert contract.read_json(champion.uri, "metrics.json")["users"] == 300


def test_a_symlinked_version_inside_the_registry_is_not_followed(tmp_path):
    root = tmp_path / "registry"
    (root / "interest").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "interest" / "v1").symlink_to(outside, target_is_directory=True)
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    with pytest.raises(Exception, match="symbolic link"):
        registry.push(blessing_for(model_dir, eval_dir), str(root), version="v1", policy=LENIENT_POLICY)
    assert list(outside.iterdir()) == []  # nothing written outside the registry's root


def test_a_pointer_edited_to_leave_the_registry_is_refused(tmp_path):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    root = tmp_path / "registry"
    registry.push(blessing_for(model_dir, eval_dir), str(root), version="v1", policy=LENIENT_POLICY)
    pointer_file = root / "interest" / "champion.json"
    pointer = json.loads(pointer_file.read_text())
    for bad in ("../../outside/v1", "/etc/v1", "interest/../../v1"):
        pointer_file.write_text(json.dumps({**pointer, "path": bad}))
        with pytest.raises(Exception, match="path|version|<model-name>/<version>"):
            registry.read_champion(str(root))


def test_a_corrupt_champion_pointer_is_one_clear_line(tmp_path, capsys):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    root = tmp_path / "registry"
    registry.push(blessing_for(model_dir, eval_dir), str(root), version="v1", policy=LENIENT_POLICY)
    (root / "interest" / "champion.json").write_text('{"version": "v1", "path": "interest/v')
    assert main(["registry", "list", "--registry", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "champion.json: the champion pointer is not valid JSON" in err[0]


def test_a_model_swapped_during_the_push_never_ships(tmp_path):
    """A thread replaces model.pt by link-and-rename every ~2 ms, alternating the blessed weights with other
    weights of the same size, while pushes run: each push ships exactly the blessed bytes, under the name those
    bytes give, or is refused; it never ships the unblessed ones (before push staged its inputs, 2 of 8 did)."""
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    blessing = blessing_for(model_dir, eval_dir)
    weights = Path(model_dir, "model.pt")
    blessed = weights.read_bytes()
    (tmp_path / "blessed.pt").write_bytes(blessed)
    (tmp_path / "other.pt").write_bytes(os.urandom(len(blessed)))
    stop, swaps = threading.Event(), []

    def swap() -> None:
        while not stop.is_set():
            for source in ("other.pt", "blessed.pt"):
                os.link(tmp_path / source, tmp_path / "next.pt")
                os.rename(tmp_path / "next.pt", weights)
                swaps.append(source)
                stop.wait(0.002)

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = []
    try:
        for attempt in range(12):
            root = str(tmp_path / f"registry-{attempt}")
            try:
                result = registry.push(blessing, root, policy=LENIENT_POLICY)
            except BlessingInvalid:
                outcomes.append("refused")
                continue
            outcomes.append(result.outcome)
            version = rundir.open_complete(result.uri)
            shipped = storage.read_bytes(version.path("model.pt"))
            assert shipped == blessed, f"push {attempt} shipped unblessed weights"
            assert result.version == "m-" + hashlib.sha256(shipped).hexdigest()[:12]
            assert version.manifest["model_sha256"] == hashlib.sha256(shipped).hexdigest()
    finally:
        stop.set()
        swapper.join()
    assert len(swaps) > 50 and set(outcomes) <= {"pushed", "refused"}, (len(swaps), outcomes)


@pytest.mark.parametrize("name", ["champion.json", "CHAMPION.JSON"])
def test_a_version_or_model_named_like_the_pointer_is_refused(tmp_path, name):
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    with pytest.raises(ConfigError, match="the name of the registry's champion pointer"):
        registry.push(blessing_for(model_dir, eval_dir), str(tmp_path / "registry"), version=name, policy=LENIENT_POLICY)
    with pytest.raises(ConfigError, match="the name of the registry's champion pointer"):
        registry.push(blessing_for(model_dir, eval_dir), str(tmp_path / "registry"), model_name=name, policy=LENIENT_POLICY)
    assert not (tmp_path / "registry").exists()
