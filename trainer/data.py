"""Read the preprocessed data directory (docs/contracts.md) into flat tensors and cut them into batches.

Everything is tensorized once: each feature column is one flat tensor holding every user's events back to back
(row 0 is an all-zero padding row), and a user is an offset into it. A batch is a single vectorized gather of a
``(B, T)`` index matrix, left-padded by pointing padded cells at row 0, so no Python loop runs per user or per step.

Training examples: per user, inputs are events ``[0, train_end - 1)`` and targets the same positions shifted by
one (events ``[1, train_end)``), both truncated to the last ``max_len``. Batches are bucketed: within windows of
``bucket_batches`` batches examples are sorted by length so a batch carries little padding, and the batch order
is shuffled. The global batch (``batch_size`` sequences) is the same for any world size; rank ``r`` takes the
rows of the users it holds and every rank pads to the global batch's longest row, so the computation does not
depend on how many processes share it.

Each process holds the events of its own share of the users only (``Share``: ``user_index % world_size ==
rank``), so the memory a rank needs falls as ranks are added; every rank still knows every user's lengths and
split points (a few integers per user), which is all that deciding the global batches takes. Rank ``r`` trains
on the rows of each global batch whose users it holds, and validates and evaluates those users: the batches are
those of one process, and so are the numbers, up to the order in which floats are summed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from core import contract, protocols, rundir, storage
from core.configs import ConfigError

# Model input key -> (contract column, dtype stored in memory).
INPUT_COLUMNS = {
    "items": ("item_index", torch.int32),
    "timestamp": ("timestamp_normalized", torch.float32),
    "log_hours_since_prev": ("log_hours_since_prev", torch.float32),
    "hour_of_day": ("hour_of_day", torch.int8),
    "day_of_week": ("day_of_week", torch.int8),
}
# Integer inputs are embedding indices: the model reads them as int64.
LONG_INPUTS = ("items", "hour_of_day", "day_of_week")


@dataclass(frozen=True)
class Share:
    """The users whose events one process holds: ``user_index % world_size == rank`` (every user for one)."""

    rank: int = 0  # this process's rank
    world_size: int = 1  # processes sharing the users

    def holds(self, user_index: np.ndarray) -> np.ndarray:
        return user_index % self.world_size == self.rank


@dataclass(frozen=True)
class Sequences:
    """Every user's lengths and split points, and the events of the users this process holds (``held``) as flat
    columns; a held user ``u``'s events are rows ``offsets[u] : offsets[u] + length[u]``."""

    user_index: Tensor  # (U,) int64, ascending
    offsets: Tensor  # (U,) int64, first row of each held user (row 0 is the padding row; 0 for users not held)
    length: Tensor  # (U,) int64 events per user
    train_end: Tensor  # (U,) int64
    valid_end: Tensor  # (U,) int64
    columns: dict[str, Tensor]  # model input key -> (1 + total events,) flat column; row 0 is padding
    num_items: int  # N; item indices are 1..N
    vocab: dict  # vocab.json as read
    data_digest: str = ""  # sha256 of vocab.json and stats.json: checkpoints resume only on the same data
    lineage: dict = field(default_factory=dict)  # fingerprint.json, and the timestamp range of normalization
    user_id: np.ndarray | None = None  # (U,) the users' ids, in user_index order (evaluation pairs users by id)
    protocol: str = protocols.DEFAULT  # the evaluation protocol the data was made for (split.json)
    held: Tensor | None = None  # (U,) bool: users whose events the columns hold; None: every user
    share: Share = Share()  # which users this process holds

    @property
    def num_users(self) -> int:
        return int(self.user_index.numel())

    def holds(self, users: Tensor) -> Tensor:
        """(n,) bool: whether this process holds the events of users (positions in ``user_index``)."""
        return torch.ones_like(users, dtype=torch.bool) if self.held is None else self.held[users]


def open_data(data_dir: str) -> rundir.Complete:
    """The complete preprocessed directory ``data_dir``: its manifest exists and lists sequence shards whose row
    counts add up to stats.json's users (IncompleteOutput, exit 2, names what is missing)."""
    try:
        data = rundir.open_complete(data_dir, contract.DATA_KIND)
    except rundir.IncompleteOutput as exc:
        raise rundir.IncompleteOutput(f"--data: {exc}") from None
    shards = data.matching(f"{contract.SEQUENCES_PREFIX}-", ".parquet")
    if not shards:
        raise rundir.IncompleteOutput(f"--data: {data_dir} lists no {contract.SEQUENCES_PREFIX}-*.parquet shards")
    users = storage.read_json(data.path(contract.STATS))["users"]
    rows = sum(data.files[name].get("rows", 0) for name in shards)
    if rows != users:
        raise rundir.IncompleteOutput(f"--data: {data_dir}: its shards hold {rows} users, stats.json says {users}")
    return data


def load_sequences(data_dir: str, share: Share = Share()) -> Sequences:
    """Read a complete preprocessed directory (local or object store): vocab.json, every user's lengths and split
    points, and the events of the users ``share`` holds. Shards are read one at a time and cut to the share as
    they are read, so the peak is one shard plus the share, not the whole data set."""
    data = open_data(data_dir)
    vocab_bytes, stats_bytes = storage.read_bytes(data.path(contract.VOCAB)), storage.read_bytes(data.path(contract.STATS))
    vocab, stats = json.loads(vocab_bytes), json.loads(stats_bytes)
    fingerprint = data.optional_path(contract.FINGERPRINT)
    split = data.optional_path(contract.SPLIT)
    # Data made before protocols were named is ours.
    protocol = (storage.read_json(split) if split else {}).get("protocol", protocols.DEFAULT)
    lineage = {"fingerprint": storage.read_json(fingerprint) if fingerprint else None,
               "dir_digest": data.content_digest,  # every file of the data dir (rundir.Complete.content_digest)
               "timestamp_min": stats.get("timestamp_min"), "timestamp_max": stats.get("timestamp_max")}
    num_items = len(vocab["items"])
    users = ["user_index", "user_id", "train_end", "valid_end"]
    events = [c for c, _ in INPUT_COLUMNS.values()]
    every_user, held_users = [], []
    for name in data.matching(f"{contract.SEQUENCES_PREFIX}-", ".parquet"):
        uri = data.path(name)
        raw = storage.read_bytes(uri)  # read once: checked against the manifest's digest, then parsed from memory
        if hashlib.sha256(raw).hexdigest() != data.files[name]["sha256"]:
            raise rundir.IncompleteOutput(f"--data: {uri} does not match the sha256 its {rundir.MARKER} lists "
                                          "(altered or damaged since it was written); preprocess again")
        try:
            table = pq.read_table(pa.BufferReader(raw), columns=users + events)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"--data: {uri} is not a readable Parquet shard: {str(exc).splitlines()[0]}") from None
        except KeyError as exc:
            raise ConfigError(f"--data: {uri}: sequences do not follow the contract: missing column {exc}") from None
        every_user.append(table.select(users).append_column(
            "length", pc.list_value_length(table.column("item_index")).cast(pa.int64())))
        mine = table if share.world_size == 1 else table.filter(share.holds(table.column("user_index").to_numpy()))
        held_users.append(mine.select(["user_index"] + events))
    table = pa.concat_tables(every_user).sort_by("user_index")
    held_table = pa.concat_tables(held_users).sort_by("user_index")

    def ints(name: str) -> Tensor:
        return torch.tensor(table.column(name).to_numpy(), dtype=torch.long)

    user_index, length, train_end, valid_end = ints("user_index"), ints("length"), ints("train_end"), ints("valid_end")
    if bool(((train_end < 0) | (train_end > valid_end) | (valid_end > length)).any()):
        raise ConfigError(f"--data: {data_dir}: needs 0 <= train_end <= valid_end <= len(item_index) for every user")
    held = torch.from_numpy(share.holds(user_index.numpy()))
    held_length = length[held]
    columns = {}
    for key, (name, dtype) in INPUT_COLUMNS.items():
        lists = held_table.column(name).combine_chunks()
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        if not (lengths == held_length.numpy()).all():
            raise ConfigError(f"--data: {data_dir}: column {name} has list lengths that differ from item_index")
        flat = torch.tensor(pc.list_flatten(lists).to_numpy(zero_copy_only=False), dtype=dtype)
        columns[key] = torch.cat([torch.zeros(1, dtype=dtype), flat])
    items = columns["items"]
    if items.numel() > 1 and (int(items[1:].min()) < 1 or int(items.max()) > num_items):
        raise ConfigError(f"--data: {data_dir}: item_index outside 1..{num_items} (the vocab.json size)")
    offsets = torch.zeros_like(length)
    offsets[held] = 1 + torch.cumsum(held_length, 0) - held_length
    return Sequences(user_index, offsets, length, train_end, valid_end, columns, num_items, vocab,
                     hashlib.sha256(vocab_bytes + b"\0" + stats_bytes).hexdigest(), lineage,
                     table.column("user_id").to_numpy(zero_copy_only=False).astype(str),
                     protocols.get_protocol(protocol).name, None if share.world_size == 1 else held, share)


def gather(seqs: Sequences, start: Tensor, length: Tensor, width: int | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """Left-padded model inputs for rows ``start : start + length`` of the flat columns, and the row matrix.

    Returns ``(batch, rows)``: ``batch[key]`` is ``(B, T)`` with ``T = width or max(length)``, and ``rows``
    ``(B, T)`` the flat row of each cell (0 at padding), so ``rows + 1`` addresses the next event.
    """
    width = int(length.max()) if width is None else width
    pad = width - length  # (B,)
    pos = torch.arange(width)  # (T,)
    real = pos[None, :] >= pad[:, None]  # (B, T)
    rows = torch.where(real, start[:, None] + pos[None, :] - pad[:, None], 0)  # (B, T)
    batch = {}
    for key, column in seqs.columns.items():
        values = column[rows]
        batch[key] = values.long() if key in LONG_INPUTS else values
    return batch, rows


def span_rows(start: Tensor, length: Tensor) -> Tensor:
    """The flat rows ``start[i] : start[i] + length[i]`` of every span, concatenated in order."""
    first = torch.cumsum(length, 0) - length  # position of each span's first row in the output
    return torch.repeat_interleave(start - first, length) + torch.arange(int(length.sum()))


class TrainBatch(NamedTuple):
    inputs: dict[str, Tensor]  # model inputs (B_rank, T), left-padded
    targets: Tensor  # (B_rank, T) next item per position, 0 at padding
    tokens: int  # real (non-padding) target positions on this rank
    global_tokens: int  # real target positions in the whole global batch
    global_rows: int  # sequences in the whole global batch


class TrainingSet:
    """One training example per user with at least two training events (one input, one target).

    ``width_multiple``: a batch's width (its longest row) is rounded up to a multiple of this, capped at max_len,
    so a run sees a handful of shapes instead of one per length (torch.compile and GPU kernels pick static
    shapes; 1: every batch exactly as wide as its longest row, the least padding).
    """

    def __init__(self, seqs: Sequences, max_len: int, width_multiple: int = 1):
        keep = seqs.train_end >= 2
        self.seqs, self.max_len, self.width_multiple = seqs, max_len, width_multiple
        self.user = torch.nonzero(keep).flatten()  # (E,) each example's user (position in seqs)
        self.length = torch.clamp(seqs.train_end[keep] - 1, max=max_len)  # (E,)
        # Inputs end at event train_end - 2 (its target is train_end - 1, the last training event); meaningful for
        # the users this process holds only.
        self.start = seqs.offsets[keep] + seqs.train_end[keep] - 1 - self.length  # (E,)

    def __len__(self) -> int:
        return int(self.length.numel())

    def item_frequencies(self) -> Tensor:
        """(N+1,) how often each item occurs among the training events of the users this process holds (summed over
        the ranks, the proposal of sampled softmax)."""
        held = self.seqs.holds(torch.arange(self.seqs.num_users))
        items = self.seqs.columns["items"][span_rows(self.seqs.offsets[held], self.seqs.train_end[held])].long()
        return torch.bincount(items, minlength=self.seqs.num_items + 1)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full global batches per epoch; the remainder (< batch_size, different users each epoch) is dropped."""
        return len(self) // batch_size

    def epoch_batches(self, batch_size: int, bucket_batches: int, seed: int, epoch: int) -> list[Tensor]:
        """Example indices of every global batch of ``epoch``, a pure function of (seed, epoch)."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        steps = self.steps_per_epoch(batch_size)
        order = torch.randperm(len(self), generator=generator)[: steps * batch_size]
        window = bucket_batches * batch_size
        batches = []
        for begin in range(0, order.numel(), window):
            chunk = order[begin: begin + window]
            chunk = chunk[torch.argsort(self.length[chunk], stable=True)]
            batches.extend(chunk.split(batch_size))
        shuffle = torch.randperm(len(batches), generator=generator)
        return [batches[i] for i in shuffle.tolist()]

    def batch(self, examples: Tensor, rank: int = 0, world_size: int = 1) -> TrainBatch:
        """This rank's share of the global batch ``examples``: the rows of the users ``Share(rank, world_size)``
        holds, in batch order (none at all, now and then: the step still takes part in DDP's all-reduce)."""
        length = self.length[examples]
        users = self.user[examples]
        mine = examples[torch.from_numpy(Share(rank, world_size).holds(self.seqs.user_index[users].numpy()))]
        if not bool(self.seqs.holds(self.user[mine]).all()):
            raise ValueError(f"rank {rank} of {world_size} needs users this process does not hold "
                             f"(it holds {self.seqs.share}): load the sequences with the same Share")
        width = min(self.max_len, -(-int(length.max()) // self.width_multiple) * self.width_multiple)
        inputs, rows = gather(self.seqs, self.start[mine], self.length[mine], width=width)
        targets = torch.where(rows > 0, self.seqs.columns["items"][rows + 1].long(), 0)
        return TrainBatch(inputs, targets, int(self.length[mine].sum()), int(length.sum()), int(examples.numel()))


class _EpochShard(Dataset):
    """Map-style view of one epoch's global batches, giving one rank's share; lets a DataLoader prefetch."""

    def __init__(self, data: TrainingSet, batches: list[Tensor], rank: int, world_size: int):
        self.data, self.batches, self.rank, self.world_size = data, batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> TrainBatch:
        return self.data.batch(self.batches[i], self.rank, self.world_size)


def epoch_loader(data: TrainingSet, batch_size: int, bucket_batches: int, seed: int, epoch: int,
                 first_batch: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """This rank's batches of ``epoch`` from batch ``first_batch`` on (a resumed run skips the ones it did)."""
    batches = data.epoch_batches(batch_size, bucket_batches, seed, epoch)
    shard = _EpochShard(data, batches, rank, world_size)
    # Its own generator: creating a loader must not draw from the global RNG, which a checkpoint restores.
    return DataLoader(shard, batch_size=None, sampler=range(first_batch, len(batches)), num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator())


@dataclass(frozen=True)
class EvalSet:
    """The users of a split that have a target and a non-empty history (or a fixed random sample of them), in
    ascending user order. Its targets, histories and inputs read events: take them from ``held()``, the users
    this process holds."""

    seqs: Sequences
    user: Tensor  # (M,) int64 position in ``seqs`` (row of user_index)
    end: Tensor  # (M,) int64 target position within the user's events; the history is events [0, end)
    max_len: int
    split: str
    eligible: int = 0  # users of the split with a target, before any sampling

    @classmethod
    def build(cls, seqs: Sequences, split: str, max_len: int, users: int = 0, seed: int = 0) -> EvalSet:
        """``users`` > 0: a sample of that many of the split's users, drawn with ``seed`` (the same users for any
        world size and on every rank); 0, or more than there are: all of them."""
        if split not in contract.SPLITS:
            raise ConfigError(f"--split: {split!r} is not allowed; choose one of {', '.join(contract.SPLITS)}")
        if split == "valid":
            end, has_target = seqs.train_end, seqs.train_end < seqs.valid_end
        else:
            end, has_target = seqs.valid_end, seqs.valid_end < seqs.length
        user = torch.nonzero(has_target & (end >= 1)).flatten()
        eligible = int(user.numel())
        if 0 < users < eligible:
            sample = torch.randperm(eligible, generator=torch.Generator().manual_seed(seed))[:users]
            user = user[torch.sort(sample).values]
        return cls(seqs, user, end[user], max_len, split, eligible)

    def held(self) -> EvalSet:
        """The part of this set whose users this process holds (the whole set in a single process)."""
        mine = self.seqs.holds(self.user)
        return dataclasses.replace(self, user=self.user[mine], end=self.end[mine])

    def __len__(self) -> int:
        return int(self.user.numel())

    @property
    def user_index(self) -> Tensor:
        return self.seqs.user_index[self.user]

    @property
    def user_id(self) -> np.ndarray:
        return self.seqs.user_id[self.user.numpy()]

    @property
    def targets(self) -> Tensor:
        """(M,) the item each user interacts with next."""
        return self.seqs.columns["items"][self.seqs.offsets[self.user] + self.end].long()

    def history(self, mask: protocols.HistoryMask = "history") -> tuple[Tensor, Tensor]:
        """The items masked at ranking time, as CSR ``(indptr, indices)`` (the form
        ``trainer.metrics.full_ranking_metrics`` masks with): every item seen before each target ('history'),
        or only those of the model's input, the last max_len events before it ('input_window')."""
        start, length = (self.seqs.offsets[self.user], self.end) if mask == "history" else self.input_window()
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(length, 0)])
        return indptr, self.seqs.columns["items"][span_rows(start, length)].long()

    def input_window(self) -> tuple[Tensor, Tensor]:
        """(start, length) per user of the model's input: the last ``max_len`` events before the target."""
        length = torch.clamp(self.end, max=self.max_len)
        return self.seqs.offsets[self.user] + self.end - length, length

    def input_batches(self, batch_size: int):
        """Yield ``(positions, inputs)`` for the users this process holds (``positions`` index into ``held()``):
        their model inputs for the last ``max_len`` history events, in the batches one process makes of the whole
        set (users sorted by length, ``batch_size`` at a time, each batch as wide as its longest row). A rank
        takes its users' rows of each batch at that batch's width, since on the CPU attention rounds differently
        with the width: a user's embedding then barely depends on how many processes share the users."""
        start, length = self.input_window()
        held = self.seqs.holds(self.user)
        position = torch.cumsum(held.long(), 0) - 1
        order = torch.argsort(length, stable=True)
        for chunk in order.split(batch_size) if len(self) else ():  # no users (a split without targets): no batch
            mine = chunk[held[chunk]]
            if mine.numel():
                inputs, _ = gather(self.seqs, start[mine], length[mine], width=int(length[chunk].max()))
                yield position[mine], inputs
