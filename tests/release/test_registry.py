"""release.registry on a local directory and on GCS (the emulator behind the precondition-enforcing proxy)."""

from __future__ import annotations

import re
import shutil

import pytest

from core import contract, rundir, storage
from core.configs import ConfigError
from release.gate import decide
from release.records import Run
from release.registry import (
    ChampionChanged,
    VersionConflict,
    check_name,
    check_registry,
    list_versions,
    push,
    read_champion,
    read_pointer,
    resolve,
)
from tests.support.fake_artifacts import LENIENT, LENIENT_POLICY, blessing_for, write_data_dir, write_run


@pytest.fixture(params=["local", "gcs"])
def registry(request, tmp_path):
    """A registry root on each backend; on GCS the proxy enforces ifGenerationMatch (the emulator does not)."""
    if request.param == "local":
        return str(tmp_path / "registry")
    request.getfixturevalue("flaky_gcs")(fault_rate=0.0)
    return request.getfixturevalue("gcs_bucket") + "/registry"


def snapshot(registry: str) -> dict[str, object]:
    """Every object below the registry with its generation (GCS) or inode and mtime (local); the writer locks
    beside local versions are bookkeeping, not content."""
    if storage.is_gcs(registry):
        bucket, prefix = storage.split_gcs(registry)
        return {b.name: b.generation for b in storage.gcs_client().list_blobs(bucket, prefix=prefix)}
    import os

    return {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) for f in storage.list_files(registry)
            if not f.endswith(".lock")}


def test_push_copies_the_model_with_metrics_blessing_and_lineage(registry, tmp_path):
    data = write_data_dir(tmp_path)
    model_dir, eval_dir = write_run(tmp_path, "baseline", seed=1, data_digest=rundir.open_complete(data).content_digest)
    result = push(blessing_for(model_dir, eval_dir), registry, "interest", data_dir=data, policy=LENIENT_POLICY)
    assert (result.outcome, result.previous_version) == ("pushed", None)
    assert re.fullmatch(r"m-[0-9a-f]{12}", result.version)
    version = rundir.open_complete(result.uri, contract.REGISTRY_VERSION_KIND)
    assert set(version.files) == {"model.pt", "model_config.json", "train_config.json", "vocab.json", "summary.json",
                                  "metrics.json", "per_user.parquet", "blessing.json", "lineage.json"}  # no logs,
    assert storage.read_bytes(version.path("model.pt")) == storage.read_bytes(f"{model_dir}/model.pt")  # no state
    lineage = storage.read_json(version.path("lineage.json"))
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", lineage["code_version"])
    assert lineage["data_stats"]["interactions"] == 10 and lineage["model_config"]["name"] == "baseline"
    champion = read_champion(registry, "interest")
    assert champion.version == result.version and champion.generation != 0
    assert champion.path == f"interest/{result.version}"  # relative to the registry root
    assert champion.metrics["recall@10"] == storage.read_json(f"{eval_dir}/metrics.json")["recall@10"]
    assert len(contract.read_per_user(champion.uri)["recall@10"]) == 300
    assert resolve(f"registry:{registry}") == champion.uri == resolve(f"registry:{registry}#interest")


def test_pushing_the_same_version_twice_is_a_no_op(registry, tmp_path):
    model_dir, eval_dir = write_run(tmp_path, "baseline", seed=1)
    first = push(blessing_for(model_dir, eval_dir), registry, "interest", version="v1", policy=LENIENT_POLICY)
    before = snapshot(registry)
    again = push(blessing_for(model_dir, eval_dir), registry, "interest", version="v1", policy=LENIENT_POLICY)
    assert (first.outcome, again.outcome) == ("pushed", "already_pushed")
    assert snapshot(registry) == before


def test_a_stale_blessing_gets_champion_changed_and_a_regate_succeeds(registry, tmp_path):
    v1_model, v1_eval = write_run(tmp_path, "v1", seed=1)
    v2_model, v2_eval = write_run(tmp_path, "v2", seed=2, hit_rate=0.5)
    stale = blessing_for(v2_model, v2_eval)  # gated while there was no champion
    push(blessing_for(v1_model, v1_eval), registry, "interest", version="v1", policy=LENIENT_POLICY)
    with pytest.raises(ChampionChanged, match="champion changed, re-gate"):
        push(stale, registry, "interest", version="v2", policy=LENIENT_POLICY)
    assert read_pointer(registry, "interest")[0]["version"] == "v1"
    # Re-gate against the champion now in the registry, with the real gate, then push again.
    champion = read_champion(registry, "interest")
    blessing = decide([Run.load(name="v2", model_dir=v2_model, test_dir=v2_eval)], None, champion, LENIENT)
    assert blessing.blessed and blessing.champion["version"] == "v1" and not blessing.champion["re_evaluated"]
    result = push(blessing, registry, "interest", version="v2", policy=LENIENT_POLICY)
    assert (result.outcome, result.previous_version) == ("pushed", "v1")
    pointer, _ = read_pointer(registry, "interest")
    assert pointer["version"] == "v2" and pointer["sequence"] == 2 and pointer["previous_version"] == "v1"


def test_not_blessed_writes_nothing(registry, tmp_path):
    model_dir, eval_dir = write_run(tmp_path, "baseline", seed=1)
    result = push(blessing_for(model_dir, eval_dir, blessed=False), registry, "interest", policy=LENIENT_POLICY)
    assert result.outcome == "not_blessed" and storage.list_files(registry) == []


def test_push_needs_the_test_evaluation(registry, tmp_path):
    model_dir, eval_dir = write_run(tmp_path, "baseline", seed=1)
    blessing = blessing_for(model_dir, eval_dir)
    (tmp_path / "baseline" / "eval-test" / "per_user.parquet").unlink()
    with pytest.raises(Exception, match="per_user.parquet"):
        push(blessing, registry, "interest", policy=LENIENT_POLICY)
    assert storage.list_files(registry) == []


def test_a_version_holding_other_weights_is_refused(registry, tmp_path):
    v1_model, v1_eval = write_run(tmp_path, "v1", seed=1)
    v2_model, v2_eval = write_run(tmp_path, "v2", seed=2)
    push(blessing_for(v1_model, v1_eval), registry, "interest", version="v1", policy=LENIENT_POLICY)
    with pytest.raises(VersionConflict):
        push(blessing_for(v2_model, v2_eval, read_champion(registry, "interest")), registry, "interest", version="v1", policy=LENIENT_POLICY)


def test_a_copied_registry_works_unchanged(tmp_path):
    """Pointers and manifests hold paths relative to the root: a copy elsewhere serves the same champion."""
    model_dir, eval_dir = write_run(tmp_path, "v1", seed=1)
    push(blessing_for(model_dir, eval_dir), str(tmp_path / "registry"), "interest", version="v1", policy=LENIENT_POLICY)
    shutil.copytree(tmp_path / "registry", tmp_path / "elsewhere" / "copy")
    shutil.rmtree(tmp_path / "registry")
    champion = read_champion(str(tmp_path / "elsewhere" / "copy"), "interest")
    assert champion.uri == str(tmp_path / "elsewhere" / "copy" / "interest" / "v1")
    assert contract.read_json(champion.uri, "metrics.json")["users"] == 300
    assert [v["status"] for v in list_versions(str(tmp_path / "elsewhere" / "copy"))] == ["complete"]


@pytest.mark.parametrize("bad", ["../escape", "a/b", "/abs", "gs://other-bucket/x", "", ".", "..", "-x", "a" * 129])
def test_names_that_could_escape_the_registry_are_refused(bad, tmp_path):
    with pytest.raises(ConfigError, match="version"):
        check_name(bad, "version")
    model_dir, eval_dir = write_run(tmp_path, "m", seed=1)
    with pytest.raises(ConfigError):
        push(blessing_for(model_dir, eval_dir), str(tmp_path / "registry"), "interest", version=bad, policy=LENIENT_POLICY)
    with pytest.raises(ConfigError):
        push(blessing_for(model_dir, eval_dir), str(tmp_path / "registry"), bad, policy=LENIENT_POLICY)
    assert not (tmp_path / "registry").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("bad", ["", "gs://", "gs://Bad_Bucket!/x", "gs://bucket/../other", "gs://bucket/a/./b",
                                 "ftp://host/registry", "hdfs://nn/registry"])
def test_bad_registry_roots_are_refused(bad):
    with pytest.raises(ConfigError, match="--registry"):
        check_registry(bad)
