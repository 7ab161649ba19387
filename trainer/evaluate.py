"""Run a model over a split's users and rank the whole catalogue: the one code path behind validation during
training and ``interest evaluate``.

User embeddings come from each user's last ``max_len`` events before the target; ``trainer.metrics`` ranks
every item against them with the earlier items masked as the data's evaluation protocol says (core/protocols.py:
the whole history, or only the input window); metrics.json names the protocol. ``evaluate`` writes ``metrics.json`` and
``per_user.parquet`` as docs/contracts.md ("Evaluation output") describes.

Scale: the catalogue is scored ``item_block`` items at a time (trainer/metrics.py), and users are sharded over
processes: the ranks of a torchrun/PyTorchJob job, or ``processes`` local ones that ``evaluate`` starts itself.
Each process loads and ranks only the users it holds (``trainer.data.Share``), taking its rows of the very input
batches one process would make, and the per-user results are gathered in user order. On ML-1M's test split
every rank and metric came out identical to one process; a few user embeddings (3 of 6,040) differed in their
last bits, as the CPU's matmul kernels round by batch shape, which the norm statistics show in their 11th digit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from core import contract, protocols, rundir, storage
from core.configs import ConfigError, from_dict, require
from trainer.blocks import DEFAULT_ITEM_BLOCK, MIN_ITEM_BLOCK
from trainer.data import EvalSet, Sequences, Share, load_sequences, open_data
from trainer.distributed import Distributed, setup
from trainer.metrics import (
    DEFAULT_KS,
    TOP_ITEMS,
    full_ranking_metrics,
    norm_stats,
    row_norms,
    stats_of_norms,
    summarize,
)
from trainer.model import InterestModel
from trainer.model_config import ModelConfig
from trainer.objective import split_legacy


@dataclass(frozen=True)
class Catalogue:
    """How a model's item indices map onto a data set's (both 1..N, 0 = padding), matched by item_id."""

    to_model: Tensor  # (N_data + 1,) the model's index of each data item; 0 where the model never saw it
    unseen: Tensor  # (N_data + 1,) bool: data items the model cannot score (row 0, padding, included)

    @classmethod
    def match(cls, model_items: list[str], data_items: list[str]) -> Catalogue | None:
        """None when both catalogues are the same list (the usual case: no remapping)."""
        if model_items == data_items:
            return None
        index = {item: i + 1 for i, item in enumerate(model_items)}
        to_model = torch.tensor([0] + [index.get(item, 0) for item in data_items], dtype=torch.long)
        return cls(to_model, to_model == 0)

    def inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """A left-padded batch in data indices -> model indices, unseen items dropped and the rest kept in order
        (still left-padded, so the last column stays each user's last known event)."""
        items = self.to_model[batch["items"]]
        order = torch.argsort((items != 0).int(), dim=1, stable=True)  # unknown/padding first, order kept
        return {key: (items if key == "items" else value).gather(1, order) for key, value in batch.items()}

    def item_embeddings(self, model_items: Tensor) -> Tensor:
        """(N_model + 1, D) -> (N_data + 1, D) rows in data order (zeros where unseen)."""
        return model_items[self.to_model]


def renormalize_time(seqs: Sequences, model_lineage: dict) -> Sequences:
    """The sequences with timestamps normalized by the range the model was trained with (its lineage), when that
    differs from the data's own."""
    model_min = (model_lineage.get("data") or {}).get("timestamp_min")
    model_max = (model_lineage.get("data") or {}).get("timestamp_max")
    data_min, data_max = seqs.lineage.get("timestamp_min"), seqs.lineage.get("timestamp_max")
    if None in (model_min, model_max, data_min, data_max) or (model_min, model_max) == (data_min, data_max):
        return seqs
    raw = seqs.columns["timestamp"].double() * max(data_max - data_min, 0) + data_min
    normalized = ((raw - model_min) / max(model_max - model_min, 1)).float()
    normalized[0] = 0.0  # the padding row
    return dataclasses.replace(seqs, columns={**seqs.columns, "timestamp": normalized})


@torch.no_grad()
def user_embeddings(model: InterestModel, eval_set: EvalSet, batch_size: int, device: torch.device,
                    bf16: bool = False, catalogue: Catalogue | None = None) -> Tensor:
    """(M, D) float32 embeddings of the users of ``eval_set`` this process holds, on ``device``, in the order of
    ``eval_set.held()``."""
    out = torch.empty(int(eval_set.seqs.holds(eval_set.user).sum()), model.cfg.d_model, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for positions, inputs in eval_set.input_batches(batch_size):
        if catalogue is not None:
            inputs = catalogue.inputs(inputs)
        with autocast:
            emb = model.user_embedding({k: v.to(device, non_blocking=True) for k, v in inputs.items()})
        out[positions.to(device)] = emb.float()
    return out


def evaluate_model(model: InterestModel, eval_set: EvalSet, batch_size: int = 512,
                   device: torch.device | None = None, bf16: bool = False,
                   catalogue: Catalogue | None = None, item_block: int = DEFAULT_ITEM_BLOCK,
                   ddp: Distributed | None = None) -> tuple[dict[str, Tensor], dict]:
    """Per-user metrics and their summary (Recall@k, NDCG@10, MRR, coverage@10, user/item norm statistics).

    ``catalogue``: the model's items matched to the data's by item_id (``Catalogue.match``), when they differ.
    Under ``ddp`` (a collective) each rank ranks the users of ``eval_set`` it holds and every rank gets the
    gathered per-user values of the whole set, in its order.
    """
    device = device or next(model.parameters()).device
    part = eval_set.held()
    was_training = model.training
    model.eval()
    try:
        users = user_embeddings(model, eval_set, batch_size, device, bf16, catalogue)
        model_items = model.item_embeddings().detach().float()
        items = catalogue.item_embeddings(model_items) if catalogue else model_items
        unseen = catalogue.unseen.to(device) if catalogue else None
        protocol = protocols.get_protocol(eval_set.seqs.protocol)
        per_user = full_ranking_metrics(users, items, part.targets.to(device), part.history(protocol.mask),
                                        DEFAULT_KS, batch_size, excluded=unseen,
                                        keep_target=protocol.target_stays_candidate, item_block=item_block)
    finally:
        model.train(was_training)
    per_user["user_norm"] = row_norms(users).cpu()
    per_user = gather_users(per_user, part, eval_set, ddp)
    user_norms = per_user.pop("user_norm")
    metrics = {**summarize(per_user, eval_set.seqs.num_items), **stats_of_norms(user_norms, "user_norm"),
               **norm_stats(model_items[1:], "item_norm"), "protocol": protocol.name,
               "items": eval_set.seqs.num_items}
    if catalogue is not None:
        metrics["unseen_items"] = int(catalogue.unseen[1:].sum())
    return per_user, metrics


def gather_users(per_user: dict[str, Tensor], part: EvalSet, eval_set: EvalSet,
                 ddp: Distributed | None) -> dict[str, Tensor]:
    """Every rank's per-user values of its ``part`` of ``eval_set``, put together in ``eval_set``'s user order."""
    if ddp is None or not ddp.active:
        return per_user
    parts = ddp.gather_objects((part.user, per_user))
    user = torch.cat([u for u, _ in parts])
    order = torch.argsort(user)
    if not torch.equal(user[order], eval_set.user):
        raise RuntimeError(f"the {ddp.world_size} ranks' users do not make up the {eval_set.split} set once each: "
                           "load every rank's sequences with its own trainer.data.Share")
    return {name: torch.cat([values[name] for _, values in parts])[order] for name in per_user}


def open_model(model_dir: str) -> rundir.Complete:
    """The complete model artifact directory ``model_dir`` (IncompleteOutput, exit 2, names what is missing)."""
    try:
        model = rundir.open_complete(model_dir)
    except rundir.IncompleteOutput as exc:
        raise rundir.IncompleteOutput(f"--model: {exc}") from None
    if model.manifest.get("kind") not in contract.MODEL_KINDS:
        raise rundir.IncompleteOutput(f"--model: {model_dir} holds {model.manifest.get('kind')!r}, not a model")
    return model


@dataclass(frozen=True)
class LoadedModel:
    model: InterestModel
    vocab: dict  # vocab.json: the item ids of its indices 1..N
    lineage: dict  # lineage.json (empty for models exported before it existed)
    sha256: str  # of the model.pt bytes these weights were loaded from (what an evaluation names as measured)


def load_model(model_dir: str, device: torch.device) -> LoadedModel:
    """The exported model of ``model_dir`` (model_config.json + model.pt, read with weights_only=True), its
    vocab.json and lineage.json."""
    model_files = open_model(model_dir)
    # Models written before the objective had its own config hold it in model_config.json too.
    cfg = from_dict(ModelConfig, split_legacy(storage.read_json(model_files.path(contract.MODEL_CONFIG)))[0])
    vocab = storage.read_json(model_files.path(contract.VOCAB))
    model = InterestModel(cfg, len(vocab["items"]))
    data = storage.read_bytes(model_files.path(contract.WEIGHTS))
    contract.check_weights_archive(data, storage.join(model_dir, contract.WEIGHTS))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    lineage = model_files.optional_path(contract.LINEAGE)
    return LoadedModel(model.to(device), vocab, storage.read_json(lineage) if lineage else {},
                       hashlib.sha256(data).hexdigest())


def evaluate(model_dir: str, data_dir: str, split: str = "test", output_dir: str | None = None,
             batch_size: int = 512, protocol: str | None = None, item_block: int = DEFAULT_ITEM_BLOCK,
             processes: int = 1, overwrite: bool = False) -> dict:
    """Evaluate the model of ``model_dir`` on ``split`` ('valid' or 'test') of ``data_dir``; returns metrics.json's
    content and, when ``output_dir`` is given, publishes metrics.json and per_user.parquet there (its writer lock
    is taken first, so a second writer fails before any work).

    ``protocol`` (core/protocols.py) is the data's own (split.json) when None; another one is refused, since the
    data's items, users and targets were chosen for its protocol (preprocess again with ``--protocol``).
    ``item_block``: items scored at a time (memory, not results). ``processes`` > 1: that many local processes
    share the users (gloo; this one waits for them); under torchrun this process is one rank, rank 0 publishes.
    ``overwrite``: replace whatever ``output_dir`` holds (else only an earlier evaluation, core.rundir)."""
    require(split in contract.SPLITS, "--split", f"{split!r} is not allowed; choose one of {', '.join(contract.SPLITS)}")
    require(item_block >= MIN_ITEM_BLOCK, "--item-block", f"must be >= {MIN_ITEM_BLOCK} items, got {item_block}")
    require(processes >= 1, "--processes", f"must be >= 1, got {processes}")
    if processes > 1 and not torch.distributed.is_initialized():
        open_data(data_dir)  # found missing here, not in every process
        open_model(model_dir)
        return spawn_ranks(processes, dict(model_dir=model_dir, data_dir=data_dir, split=split, output_dir=output_dir,
                                           batch_size=batch_size, protocol=protocol, item_block=item_block,
                                           overwrite=overwrite))
    ddp = setup()
    finished = False
    try:
        metrics = _evaluate_rank(ddp, model_dir, data_dir, split, output_dir, batch_size, protocol, item_block,
                                 overwrite)
        finished = True
    finally:
        ddp.close(barrier=finished)
    return metrics


def _evaluate_rank(ddp: Distributed, model_dir: str, data_dir: str, split: str, output_dir: str | None,
                   batch_size: int, protocol: str | None, item_block: int, overwrite: bool) -> dict:
    """``evaluate`` on one rank of ``ddp``: it loads and ranks the users it holds; rank 0 publishes."""
    publishing = (rundir.writing(output_dir, contract.EVALUATION_KIND, overwrite=overwrite) if output_dir is not None and ddp.is_main
                  else contextlib.nullcontext())
    with publishing as staging:
        seqs = load_sequences(data_dir, Share(ddp.rank, ddp.world_size))
        if protocol is not None and protocols.get_protocol(protocol).name != seqs.protocol:
            raise ConfigError(f"--protocol: {data_dir} was preprocessed for protocol {seqs.protocol!r}, not "
                              f"{protocol!r}; evaluate it with --protocol {seqs.protocol}, or preprocess the events "
                              f"with `interest preprocess --protocol {protocol}`")
        device = ddp.device
        loaded = load_model(model_dir, device)
        model = loaded.model
        seqs = renormalize_time(seqs, loaded.lineage)
        catalogue = Catalogue.match(loaded.vocab["items"], seqs.vocab["items"])
        eval_set = EvalSet.build(seqs, split, model.cfg.max_len)
        started = time.perf_counter()
        per_user, metrics = evaluate_model(model, eval_set, batch_size, device, bf16=device.type == "cuda",
                                           catalogue=catalogue, item_block=item_block, ddp=ddp)
        seconds = time.perf_counter() - started
        measured = {"model_sha256": loaded.sha256, "data_digest": seqs.lineage["dir_digest"], "split": split,
                    "protocol": metrics["protocol"], "items": seqs.num_items}
        metrics.update(params=model.num_parameters(), users_per_second=len(eval_set) / seconds if seconds else 0.0,
                       split=split, **{contract.MEASURED_KEY: measured})
        if staging is not None:
            columns = {"user_id": eval_set.user_id, "user_index": eval_set.user_index.numpy()}
            columns.update({k: v.numpy() for k, v in per_user.items() if k != TOP_ITEMS})
            contract.write_per_user(staging.join(contract.PER_USER), columns, measured)
            storage.write_json(staging.join(contract.METRICS), metrics)
    return metrics


def spawn_ranks(processes: int, arguments: dict) -> dict:
    """Run ``evaluate(**arguments)`` in ``processes`` new local processes (one gloo group, a file rendezvous) and
    return rank 0's metrics. Each gets an equal part of this process's intra-op threads."""
    threads = max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory(prefix="interest-evaluate-") as tmp:
        result = os.path.join(tmp, "metrics.json")
        torch.multiprocessing.spawn(_spawned_rank, args=(processes, f"file://{tmp}/rendezvous", threads, arguments,
                                                         result), nprocs=processes, join=True)
        with open(result) as f:
            return json.load(f)


def _spawned_rank(rank: int, world_size: int, init_method: str, threads: int, arguments: dict, result: str) -> None:
    torch.set_num_threads(threads)
    torch.distributed.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        metrics = evaluate(**arguments)  # joins the group this function started
        torch.distributed.barrier()  # neither rank tears gloo down while the other still sends
    finally:
        torch.distributed.destroy_process_group()
    if rank == 0:
        with open(result, "w") as f:
            json.dump(metrics, f)
