"""Storage writes, the model push and the champion-pointer update through a proxy that fails a share of the
requests (503s, resets, lost responses): everything completes via google-cloud-storage's retries, and an
observer reading the emulator directly never sees a partial object under a final name."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from core import rundir, storage
from release.registry import POINTER, push, read_champion
from tests.support.fake_artifacts import LENIENT_POLICY, blessing_for, write_run
from tests.support.flaky_gcs import FAULT_MODES, Emulator

MANIFEST = rundir.MARKER


def without_run_prefix(rel: str) -> str:
    """``interest/v1/run-.../model.pt`` -> ``interest/v1/model.pt``: a version's files live below the run prefix
    its marker names (core.rundir on object stores)."""
    return "/".join(p for p in rel.split("/") if not p.startswith("run-"))


def test_storage_writes_uploads_and_reads_survive_faults(flaky_gcs, gcs_bucket, tmp_path):
    proxy = flaky_gcs(fault_rate=0.3, seed=11)
    big = tmp_path / "big.bin"  # over 8 MiB: google-cloud-storage switches to a resumable upload
    big.write_bytes(hashlib.sha256(b"seed").digest() * (9 * 2**20 // 32))
    expected = {f"{gcs_bucket}/out/small-{i}.bin": bytes([i]) * (100 * i + 1) for i in range(8)}
    for uri, data in expected.items():
        storage.write_bytes(uri, data)
    storage.write_json(f"{gcs_bucket}/out/doc.json", {"rows": 3})
    storage.upload_file(big, f"{gcs_bucket}/out/big.bin")
    storage.copy_tree(f"{gcs_bucket}/out", f"{gcs_bucket}/copy")
    for uri, data in expected.items():
        assert storage.read_bytes(uri) == data
        assert storage.read_bytes(uri.replace("/out/", "/copy/")) == data
    assert storage.read_bytes(f"{gcs_bucket}/copy/big.bin") == big.read_bytes()
    assert storage.read_json(f"{gcs_bucket}/out/doc.json") == {"rows": 3}
    assert len(storage.list_files(f"{gcs_bucket}/copy")) == len(expected) + 2
    assert all(proxy.counts[mode] > 0 for mode in FAULT_MODES), proxy.counts
    print("storage under faults:", dict(proxy.counts))


class Observer(threading.Thread):
    """Polls the emulator directly while a push runs and records anything a reader must never see: a JSON
    object that does not parse, a copied file whose bytes differ from its source, a manifest whose files are
    missing or different, or a champion pointer naming a version without a manifest."""

    def __init__(self, emulator: Emulator, bucket: str, prefix: str, sources: dict[str, bytes]):
        super().__init__(daemon=True)
        self.emulator, self.bucket, self.prefix, self.sources = emulator, bucket, prefix, sources
        self.violations: list[str] = []
        self.observations = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.check()

    def check(self) -> None:
        for name in self.emulator.list_names(self.bucket, self.prefix):
            data = self.emulator.read(self.bucket, name)
            if data is None:  # deleted since it was listed (a lock released)
                continue
            self.observations += 1
            rel = name[len(self.prefix):]
            if name.endswith(".json"):
                try:
                    obj = json.loads(data)
                except ValueError:
                    self.violations.append(f"partial JSON {name}")
                    continue
                if rel.endswith(MANIFEST):
                    self.check_manifest(rel.rsplit("/", 1)[0], obj)
                if rel.endswith(POINTER):
                    manifest = self.emulator.read(self.bucket, f"{self.prefix}{obj['path']}/{MANIFEST}")
                    if manifest is None:
                        self.violations.append(f"pointer names {obj['version']}, which has no marker")
            elif without_run_prefix(rel) in self.sources and data != self.sources[without_run_prefix(rel)]:
                self.violations.append(f"{name}: {len(data)} bytes differ from the source")

    def check_manifest(self, version_rel: str, manifest: dict) -> None:
        for rel, entry in manifest["files"].items():
            data = self.emulator.read(self.bucket, f"{self.prefix}{version_rel}/{manifest['root']}/{rel}")
            if data is None or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                self.violations.append(f"{version_rel}/{rel} missing or different from its manifest")


def test_push_and_pointer_update_survive_faults_with_nothing_partial_visible(flaky_gcs, gcs_bucket, gcs_emulator,
                                                                              tmp_path):
    proxy = flaky_gcs(fault_rate=0.3, seed=3)
    root = f"{gcs_bucket}/registry"
    runs = {version: write_run(tmp_path, version, seed=seed) for seed, version in enumerate(("v1", "v2"))}
    sources = {f"interest/{version}/{p.relative_to(model_dir).as_posix()}": p.read_bytes()
               for version, (model_dir, _) in runs.items() for p in Path(model_dir).rglob("*")
               if p.is_file() and not p.name.endswith(".json")}
    observer = Observer(Emulator(gcs_emulator), storage.split_gcs(gcs_bucket)[0], "registry/", sources)
    observer.start()
    try:
        first = push(blessing_for(*runs["v1"]), root, "interest", version="v1", policy=LENIENT_POLICY)
        champion = read_champion(root, "interest")
        second = push(blessing_for(*runs["v2"], champion), root, "interest", version="v2", policy=LENIENT_POLICY)
        again = push(blessing_for(*runs["v2"], champion), root, "interest", version="v2", policy=LENIENT_POLICY)
    finally:
        observer.done.set()
        observer.join(timeout=60)
    observer.check()  # once more on the final state
    assert (first.outcome, second.outcome, again.outcome) == ("pushed", "pushed", "already_pushed")
    assert read_champion(root, "interest").version == "v2"
    assert observer.violations == [] and observer.observations > 0
    assert proxy.counts["faults"] > 0 and all(proxy.counts[mode] > 0 for mode in FAULT_MODES), proxy.counts
    print("push under faults:", dict(proxy.counts), "observer reads:", observer.observations)


def test_a_lost_response_to_the_pointer_write_is_recognised_as_our_own_write(flaky_gcs, gcs_bucket, tmp_path):
    """The pointer write lands but its answer is lost; the retry then fails its precondition (the generation has
    moved: by our own write). The push must see its own push_id and report success, not ChampionChanged."""
    proxy = flaky_gcs(fault_rate=0.0)
    proxy.inject("drop_response", "ifGenerationMatch=0")
    result = push(blessing_for(*write_run(tmp_path, "v1", seed=1)), f"{gcs_bucket}/registry", "interest",
                  version="v1", policy=LENIENT_POLICY)
    assert result.outcome == "pushed"
    assert proxy.counts["drop_response"] == 1 and proxy.counts["precondition_failed"] == 1
    assert read_champion(f"{gcs_bucket}/registry", "interest").version == "v1"


def test_training_checkpoints_to_gcs_survive_faults_and_resume(flaky_gcs, gcs_bucket, tmp_path):
    """A training run whose output (checkpoints, sidecars, model, summary, TensorBoard) is gs:// behind the
    faulty proxy finishes, equals the same run on local disk, and a rerun resumes from the uploaded checkpoint."""
    import torch

    from tests.support.data import write_preprocessed
    from trainer import checkpoint
    from trainer.model_config import ModelConfig
    from trainer.train import train
    from trainer.train_config import TrainConfig

    data = write_preprocessed(tmp_path / "data")
    tiny_model = ModelConfig(d_model=16, n_layer=1, n_head=2, max_len=12, dropout=0.0)
    cfg = TrainConfig(batch_size=6, epochs=None, max_steps=8, eval_every_steps=4, checkpoint_every_steps=4,
                      log_every_steps=2, patience=0, lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the local and the gs:// run must compute bit-identical steps
    try:
        local = train(str(data), str(tmp_path / "local"), tiny_model, cfg)
        proxy = flaky_gcs(fault_rate=0.25, seed=5)
        out = f"{gcs_bucket}/runs/flaky"
        remote = train(str(data), out, tiny_model, cfg)
        again = train(str(data), out, tiny_model, cfg)
    finally:
        torch.set_num_threads(threads)
    assert proxy.counts["faults"] > 0, proxy.counts
    assert remote["steps"] == local["steps"] == 8 and again["resumed_from"] == [8]
    assert remote["best"] == local["best"]
    state, _ = checkpoint.load_latest(f"{out}/checkpoints")
    local_state, _ = checkpoint.load_latest(str(tmp_path / "local" / "checkpoints"))
    assert state["step"] == local_state["step"] == 8
    for key, value in local_state["model"].items():
        assert torch.equal(state["model"][key], value), key
    print("checkpoint upload under faults:", dict(proxy.counts))
