"""Reading the preprocessed directory, training batches (left padding, shifted targets, buckets, DDP shares)
and the validation/test sets, checked against plain per-user Python over the same Parquet rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from core import contract, rundir
from core.configs import ConfigError
from trainer.data import EvalSet, Share, TrainingSet, epoch_loader, load_sequences

MAX_LEN = 12


@pytest.fixture(scope="module")
def rows(tiny_data):
    """user_index -> the contract row, read the slow obvious way."""
    table = pq.read_table(sorted(tiny_data.glob("sequences-*.parquet")))
    return {r["user_index"]: r for r in table.to_pylist()}


@pytest.fixture(scope="module")
def seqs(tiny_data):
    return load_sequences(str(tiny_data))


def test_sequences_are_read_in_user_order_with_every_event(seqs, rows):
    assert seqs.user_index.tolist() == sorted(rows)
    assert seqs.num_items == 40
    for u, row in rows.items():
        events = slice(int(seqs.offsets[u]), int(seqs.offsets[u] + seqs.length[u]))
        assert seqs.columns["items"][events].tolist() == row["item_index"]
        assert seqs.columns["timestamp"][events].tolist() == pytest.approx(row["timestamp_normalized"])
        assert seqs.columns["hour_of_day"][events].tolist() == row["hour_of_day"]
        assert (int(seqs.train_end[u]), int(seqs.valid_end[u])) == (row["train_end"], row["valid_end"])


def test_training_batch_is_left_padded_with_targets_shifted_by_one(seqs, rows):
    data = TrainingSet(seqs, MAX_LEN)
    users = torch.nonzero(seqs.train_end >= 2).flatten()
    examples = torch.arange(len(data))
    batch = data.batch(examples)
    T = batch.inputs["items"].shape[1]
    assert T == MAX_LEN and set(batch.inputs) == {"items", "timestamp", "log_hours_since_prev", "hour_of_day",
                                                  "day_of_week"}
    assert batch.inputs["items"].dtype == torch.long and batch.inputs["timestamp"].dtype == torch.float32
    for i, u in enumerate(users.tolist()):
        items, end = rows[u]["item_index"], rows[u]["train_end"]
        inputs, targets = items[: end - 1][-MAX_LEN:], items[1:end][-MAX_LEN:]  # truncated to the last max_len
        pad = T - len(inputs)
        assert batch.inputs["items"][i].tolist() == [0] * pad + inputs
        assert batch.targets[i].tolist() == [0] * pad + targets
        assert batch.inputs["hour_of_day"][i, pad:].tolist() == rows[u]["hour_of_day"][: end - 1][-MAX_LEN:]
        assert batch.inputs["timestamp"][i, :pad].eq(0).all()
    assert batch.tokens == batch.global_tokens == int((batch.targets > 0).sum())


@pytest.mark.parametrize(("multiple", "longest", "width"), [(1, 7, 7), (4, 5, 8), (4, 8, 8), (5, 12, 12),
                                                        (8, 11, 12)])
def test_batch_widths_round_up_to_the_multiple_capped_at_max_len(seqs, multiple, longest, width):
    """Rounding only adds left padding: the same rows, targets and tokens as an exact-width batch."""
    exact, rounded = TrainingSet(seqs, MAX_LEN), TrainingSet(seqs, MAX_LEN, multiple)
    examples = torch.nonzero(exact.length <= longest).flatten()
    examples = examples[torch.argsort(exact.length[examples], descending=True)][:3]
    assert int(exact.length[examples].max()) == longest
    a, b = exact.batch(examples), rounded.batch(examples)
    assert b.inputs["items"].shape[1] == width
    assert torch.equal(b.inputs["items"][:, width - longest:], a.inputs["items"])
    assert b.inputs["items"][:, :width - longest].eq(0).all()
    assert torch.equal(b.targets[:, width - longest:], a.targets) and b.tokens == a.tokens


def test_epoch_batches_partition_a_shuffled_epoch_and_depend_only_on_seed_and_epoch(seqs):
    data = TrainingSet(seqs, MAX_LEN)
    batches = data.epoch_batches(batch_size=5, bucket_batches=50, seed=1, epoch=0)
    assert len(batches) == data.steps_per_epoch(5) == len(data) // 5
    flat = torch.cat(batches)
    assert flat.numel() == flat.unique().numel() == len(batches) * 5  # no example twice; the remainder dropped
    again = data.epoch_batches(batch_size=5, bucket_batches=50, seed=1, epoch=0)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = data.epoch_batches(batch_size=5, bucket_batches=50, seed=1, epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(batches, other, strict=True))


def test_bucketing_cuts_padding(seqs):
    data = TrainingSet(seqs, MAX_LEN)

    def padding(bucket_batches: int) -> float:
        cells = real = 0
        for examples in data.epoch_batches(4, bucket_batches, seed=0, epoch=0):
            lengths = data.length[examples]
            cells += int(lengths.max()) * lengths.numel()
            real += int(lengths.sum())
        return 1 - real / cells

    assert padding(bucket_batches=50) < padding(bucket_batches=1) / 2


def test_ranks_share_the_global_batch_whatever_the_world_size(tiny_data, seqs):
    """Each rank loads only its users (user_index % 2) and takes their rows of the global batch: together the
    ranks hold every user once and every row of the batch, at the global batch's width."""
    data = TrainingSet(seqs, MAX_LEN)
    shares = [load_sequences(str(tiny_data), Share(rank, 2)) for rank in range(2)]
    parts = [TrainingSet(share, MAX_LEN) for share in shares]
    assert sum(int(share.held.sum()) for share in shares) == seqs.num_users
    assert sum(share.columns["items"].numel() - 1 for share in shares) == seqs.columns["items"].numel() - 1
    for examples in data.epoch_batches(7, 50, seed=0, epoch=0):
        whole = data.batch(examples)
        batches = [part.batch(examples, rank, 2) for rank, part in enumerate(parts)]
        assert sum(b.tokens for b in batches) == whole.global_tokens == batches[0].global_tokens
        assert all(b.inputs["items"].shape[1] == whole.inputs["items"].shape[1] for b in batches)  # global width
        odd = seqs.user_index[data.user[examples]] % 2 == 1
        for rank, b in enumerate(batches):
            rows = odd if rank else ~odd
            assert torch.equal(b.targets, whole.targets[rows])
            assert all(torch.equal(b.inputs[k], whole.inputs[k][rows]) for k in whole.inputs)
    with pytest.raises(ValueError, match="does not hold"):
        parts[0].batch(examples, 1, 2)  # rank 0's data asked for rank 1's rows


def test_loader_resumes_mid_epoch_at_the_same_batch(seqs):
    data = TrainingSet(seqs, MAX_LEN)
    full = list(epoch_loader(data, 5, 50, seed=3, epoch=2))
    tail = list(epoch_loader(data, 5, 50, seed=3, epoch=2, first_batch=4))
    assert len(tail) == len(full) - 4
    assert all(torch.equal(a.targets, b.targets) for a, b in zip(full[4:], tail, strict=True))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_set_has_target_history_and_whole_history_mask(seqs, rows, split):
    eval_set = EvalSet.build(seqs, split, MAX_LEN)
    assert eval_set.user_index.tolist() == sorted(rows)  # leave-one-out: every user has both targets
    indptr, indices = eval_set.history()
    lengths = {}
    for position, inputs in eval_set.input_batches(batch_size=10):
        for row, i in enumerate(position.tolist()):
            lengths[i] = inputs["items"][row]
            assert inputs["items"].shape[0] <= 10
    for i, u in enumerate(eval_set.user_index.tolist()):
        items = rows[u]["item_index"]
        end = rows[u]["train_end"] if split == "valid" else rows[u]["valid_end"]
        assert int(eval_set.targets[i]) == items[end]
        assert indices[indptr[i]:indptr[i + 1]].tolist() == items[:end]  # all of it, for masking
        history = lengths[i][lengths[i] > 0].tolist()
        assert history == items[:end][-MAX_LEN:] and lengths[i][-1] != 0  # left-padded, newest last


def test_a_directory_that_is_not_preprocessed_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="incomplete: no _SUCCESS.json"):
        load_sequences(str(tmp_path))

    def publish(files: dict[str, bytes], rows: int = 0) -> str:
        out = tmp_path / f"data-{len(files)}"
        with rundir.writing(str(out), contract.DATA_KIND) as staging:
            for name, data in files.items():
                Path(staging.join(name)).write_bytes(data)
                if name.startswith("sequences-"):
                    staging.describe(name, rows=pq.read_metadata(tiny_data / name).num_rows)
        return str(out)

    stats = (tiny_data / "stats.json").read_bytes()
    vocab = b'{"padding_index": 0, "items": ["a", "b"]}'
    with pytest.raises(ConfigError, match="no sequences-"):
        load_sequences(publish({"vocab.json": vocab, "stats.json": stats}))
    shards = {p.name: p.read_bytes() for p in tiny_data.glob("sequences-*.parquet")}
    with pytest.raises(ConfigError, match="no vocab.json"):
        load_sequences(publish({"stats.json": stats, **shards, "x": b""}))
    with pytest.raises(ConfigError, match=r"item_index outside 1..2"):
        load_sequences(publish({"vocab.json": vocab, "stats.json": stats, **shards}))


def test_reads_a_gcs_directory(tiny_data, gcs_bucket, seqs):
    rundir.copy_complete(str(tiny_data), f"{gcs_bucket}/data")
    remote = load_sequences(f"{gcs_bucket}/data")
    assert torch.equal(remote.columns["items"], seqs.columns["items"])
    assert torch.equal(remote.train_end, seqs.train_end)


def test_a_shard_altered_in_place_is_refused_by_its_digest(tiny_data, tmp_path):
    """Same size, one byte flipped: the marker's sha256 catches what the size check cannot."""
    copy = rundir.copy_complete(str(tiny_data), str(tmp_path / "data"))
    shard = Path(copy.path(copy.matching("sequences-")[0]))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match the sha256"):
        load_sequences(str(tmp_path / "data"))
