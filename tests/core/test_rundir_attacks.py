"""core.rundir readers and writers attacked: a published directory is read only as its marker describes it (every
digest checked, no symbolic links, no foreign root), and a writer never deletes what it did not write. Each test
here read changed or foreign bytes, or deleted another output, on the code before readers verified digests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core import rundir, storage


def publish(target: Path, files: dict[str, bytes], kind: str = "model") -> Path:
    with rundir.writing(str(target), kind) as staging:
        for name, data in files.items():
            storage.write_bytes(staging.join(name), data)
    return target


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return publish(tmp_path / "model", {"model.pt": os.urandom(4096), "vocab.json": b'{"items": ["a", "b", "c"]}'})


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("attack", ["one flipped bit", "same-size model.pt swapped", "reordered vocab.json"])
def test_a_file_changed_after_the_publish_is_refused(model_dir, attack):
    if attack == "one flipped bit":
        flip_one_bit(model_dir / "model.pt")
        changed = "model.pt"
    elif attack == "same-size model.pt swapped":
        (model_dir / "model.pt").write_bytes(os.urandom(4096))
        changed = "model.pt"
    else:
        (model_dir / "vocab.json").write_bytes(b'{"items": ["c", "b", "a"]}')  # same size, items remapped
        changed = "vocab.json"
    with pytest.raises(rundir.IncompleteOutput, match=f"{changed} does not match the sha256"):
        rundir.open_complete(str(model_dir))
    assert not rundir.is_complete(str(model_dir))


def test_a_listed_file_that_is_a_symbolic_link_is_refused(model_dir, tmp_path):
    outside = tmp_path / "outside.pt"
    outside.write_bytes((model_dir / "model.pt").read_bytes())  # the very same bytes: still not this directory's
    (model_dir / "model.pt").unlink()
    (model_dir / "model.pt").symlink_to(outside)
    with pytest.raises(rundir.IncompleteOutput, match="model.pt is a symbolic link"):
        rundir.open_complete(str(model_dir))


@pytest.mark.parametrize("root", ["../other", "/etc", "run-x/../../other", "", 7])
def test_a_marker_whose_root_points_elsewhere_is_refused(model_dir, root):
    marker = json.loads((model_dir / "_SUCCESS.json").read_text())
    (model_dir / "_SUCCESS.json").write_text(json.dumps({**marker, "root": root}))
    with pytest.raises(rundir.IncompleteOutput, match="foreign root"):
        rundir.open_complete(str(model_dir))


def test_a_marker_root_on_an_object_store_is_only_its_own_version(s3_bucket):
    first, second = f"{s3_bucket}/a", f"{s3_bucket}/b"
    publish(first, {"model.pt": b"champion weights"})
    publish(second, {"model.pt": b"other weights!!!"})
    marker = json.loads(storage.read_bytes(f"{second}/_SUCCESS.json"))
    storage.write_bytes(f"{second}/_SUCCESS.json", json.dumps({**marker, "root": "../a/" + marker["root"]}).encode())
    with pytest.raises(rundir.IncompleteOutput, match="foreign root"):
        rundir.open_complete(second)


# ------------------------------------------------------------------------------------------ what a writer replaces


@pytest.mark.parametrize("kind", ["evaluation", "report", "preprocessed-data"])
def test_a_writer_refuses_to_replace_an_output_of_another_kind(model_dir, kind):
    before = rundir.open_complete(str(model_dir)).manifest
    with pytest.raises(rundir.OutputExists, match="holds 'model' output, not"), \
            rundir.writing(str(model_dir), kind) as staging:
        storage.write_bytes(staging.join("metrics.json"), b"{}")
    assert rundir.open_complete(str(model_dir)).manifest == before
    with rundir.writing(str(model_dir), kind, overwrite=True) as staging:  # asked for: replaced
        storage.write_bytes(staging.join("metrics.json"), b"{}")
    assert rundir.open_complete(str(model_dir), kind).files.keys() == {"metrics.json"}


def test_a_writer_refuses_to_replace_files_no_run_published(tmp_path):
    home = tmp_path / "notes"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(rundir.OutputExists, match="holds files no run of this project published \\(thesis.tex\\)"), \
            rundir.writing(str(home), "evaluation") as staging:
        storage.write_bytes(staging.join("metrics.json"), b"{}")
    assert (home / "thesis.tex").read_text() == "years of work"


def test_a_writer_replaces_its_own_kind_and_keeps_working_state(model_dir):
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "step-1.pt").write_bytes(b"state")
    publish(model_dir, {"model.pt": b"retrained"})
    assert storage.read_bytes(rundir.open_complete(str(model_dir)).path("model.pt")) == b"retrained"


def test_an_output_on_an_object_store_of_another_kind_is_refused(s3_bucket):
    target = f"{s3_bucket}/model"
    publish(target, {"model.pt": b"weights"})
    with pytest.raises(rundir.OutputExists, match="holds 'model' output"), \
            rundir.writing(target, "evaluation") as staging:
        storage.write_bytes(staging.join("metrics.json"), b"{}")
    assert storage.read_bytes(rundir.open_complete(target, "model").path("model.pt")) == b"weights"


# ------------------------------------------------------------------------------------- lock and staging paths


def test_a_lock_file_planted_as_a_link_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.lock").symlink_to(victim)
    with pytest.raises(rundir.OutputLocked, match="symbolic link"), rundir.writing(str(tmp_path / "out"), "report"):
        pass
    assert victim.read_text() == "precious"


def test_a_target_name_with_glob_characters_never_touches_another_outputs_staging(tmp_path):
    other_staging = tmp_path / ".ab.staging-run-1"  # another writer's work in progress, beside ours
    other_staging.mkdir()
    (other_staging / "half.parquet").write_bytes(b"rows")
    publish(tmp_path / "a*", {"metrics.json": b"{}"}, "evaluation")
    assert (other_staging / "half.parquet").read_bytes() == b"rows"
