"""A gs:// round trip: input read and every output written through Beam's GCS filesystem, against a real
gcp-storage-emulator on 127.0.0.1 (the ``gcs_bucket`` fixture)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from core import contract, rundir, storage
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import run


def test_round_trip_through_gcs(gcs_bucket, tmp_path):
    table = pa.table({"user_id": ["a", "a", "b", "b"], "item_id": ["x", "y", "x", "y"],
                      "timestamp": pa.array([1, 2, 3, 4], pa.int64())})
    local = tmp_path / "part.parquet"
    pq.write_table(table, local)
    storage.upload_file(local, f"{gcs_bucket}/events/part-0.parquet")
    storage.write_text(f"{gcs_bucket}/events/part-1.csv", "user_id,item_id,timestamp\nc,x,5\nc,y,6\nc,x,oops\n")
    out = f"{gcs_bucket}/prep"

    stats = run(f"{gcs_bucket}/events/part-*", out, PreprocessConfig(min_item_count=1, min_user_events=2,
                                                                       max_timestamp=2_000_000_000))

    complete = rundir.open_complete(out, contract.DATA_KIND)
    assert sorted(complete.files) == ["dead_letter-00000-of-00001.jsonl", "fingerprint.json", "preprocess_config.json",
                                      *[f"sequences-0000{k}-of-00004.parquet" for k in range(4)], "split.json",
                                      "stats.json", "vocab.json"]
    # Nothing else below the output: the marker, and the files it lists under its run prefix (no beam-temp).
    assert sorted(storage.list_files(out)) == sorted([f"{out}/_SUCCESS.json",
                                                      *(complete.path(name) for name in complete.files)])
    assert storage.read_json(complete.path("stats.json")) == stats
    assert (stats["users"], stats["items"], stats["interactions"], stats["dead_letter_rows"]) == (3, 2, 6, 1)
    assert storage.read_json(complete.path("vocab.json")) == {"padding_index": 0, "items": ["x", "y"]}
    dead = [json.loads(line)
            for line in storage.read_text(complete.path("dead_letter-00000-of-00001.jsonl")).splitlines()]
    assert dead == [{"source": f"{gcs_bucket}/events/part-1.csv", "line": 4, "raw": "c,x,oops",
                     "reason": "timestamp_not_numeric"}]
    seqs = pa.concat_tables(pq.read_table(io.BytesIO(storage.read_bytes(complete.path(name))))
                            for name in complete.files if name.endswith(".parquet")).sort_by("user_index")
    assert seqs.column("user_id").to_pylist() == ["a", "b", "c"]
    assert seqs.column("item_index").to_pylist() == [[1, 2], [1, 2], [1, 2]]


def test_output_completes_through_flaky_storage(flaky_gcs, gcs_bucket):
    """503s and reset connections on 20% of requests (reads, resumable uploads, renames, small JSON files):
    retries make every output complete, and Beam's sinks publish a final name only by copying a finished
    temp object. (Lost responses are left out here: the emulator answers 404 to a retried final chunk of a
    finished resumable upload, where GCS answers with the object.)"""
    storage.write_text(f"{gcs_bucket}/in/e.csv", "user_id,item_id,timestamp\n" + "".join(
        f"u{n % 5},i{n % 4},{100 + n}\n" for n in range(60)) + "u0,i0,x\n")
    proxy = flaky_gcs(fault_rate=0.2, seed=1, modes=("503", "reset"))
    out = f"{gcs_bucket}/prep"

    stats = run(f"{gcs_bucket}/in/e.csv", out, PreprocessConfig(max_timestamp=2_000_000_000))

    assert proxy.counts["faults"] >= 5, proxy.counts
    print("preprocessing under faults:", dict(proxy.counts))
    assert (stats["interactions"], stats["dead_letter_rows"]) == (60, 1)
    complete = rundir.open_complete(out, contract.DATA_KIND)
    finals = sorted(complete.files)
    assert finals == ["dead_letter-00000-of-00001.jsonl", "fingerprint.json", "preprocess_config.json",
                      *[f"sequences-0000{k}-of-00004.parquet" for k in range(4)], "split.json", "stats.json",
                      "vocab.json"]
    seqs = pa.concat_tables(pq.read_table(io.BytesIO(storage.read_bytes(complete.path(name))))
                            for name in finals if name.endswith(".parquet"))
    assert seqs.num_rows == 5 and sum(len(x) for x in seqs.column("item_index").to_pylist()) == 60
