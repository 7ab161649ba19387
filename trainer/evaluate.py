"""Run a model over a split's users and rank the whole catalogue: the one code path behind validation during
training and ``interest evaluate``.

User embeddings come from each user's last ``max_len`` events before the target; ``trainer.metrics`` ranks
every item against them with the earlier items masked as the data's evaluation protocol says (core/protocols.py:
the whole history, or only the input window); metrics.json names the protocol. ``evaluate`` writes ``metrics.json`` and
``per_user.parquet`` as docs/contracts.md ("Evaluation output") describes.

A model may be evaluated on data whose catalogue differs from the one it was trained on (the production champion
on today's data): items are matched by ``item_id``. Items the model never saw are dropped from its input
histories and can never be recommended by it (scored -inf, so a target among them ranks last); items of its own
catalogue that today's data lacks are simply not candidates. Timestamps are normalized with the range the model
was trained with (its lineage.json), not today's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from core import contract, protocols, rundir, storage
from core.configs import ConfigError, from_dict
from trainer.data import EvalSet, Sequences, load_sequences
from trainer.metrics import DEFAULT_KS, TOP_ITEMS, full_ranking_metrics, norm_stats, summarize
from trainer.model import InterestModel
from trainer.model_config import ModelConfig


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
    """(M, D) float32 user embeddings on ``device``, in the order of ``eval_set``."""
    out = torch.empty(len(eval_set), model.cfg.d_model, device=device)
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
                   catalogue: Catalogue | None = None) -> tuple[dict[str, Tensor], dict]:
    """Per-user metrics and their summary (Recall@k, NDCG@10, MRR, coverage@10, user/item norm statistics).

    ``catalogue``: the model's items matched to the data's by item_id (``Catalogue.match``), when they differ.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        users = user_embeddings(model, eval_set, batch_size, device, bf16, catalogue)
        model_items = model.item_embeddings().detach().float()
        items = catalogue.item_embeddings(model_items) if catalogue else model_items
        unseen = catalogue.unseen.to(device) if catalogue else None
        protocol = protocols.get_protocol(eval_set.seqs.protocol)
        per_user = full_ranking_metrics(users, items, eval_set.targets.to(device), eval_set.history(protocol.mask),
                                        DEFAULT_KS, batch_size, excluded=unseen,
                                        keep_target=protocol.target_stays_candidate)
    finally:
        model.train(was_training)
    metrics = {**summarize(per_user, eval_set.seqs.num_items), **norm_stats(users, "user_norm"),
               **norm_stats(model_items[1:], "item_norm"), "protocol": protocol.name,
               "items": eval_set.seqs.num_items}
    if catalogue is not None:
        metrics["unseen_items"] = int(catalogue.unseen[1:].sum())
    return per_user, metrics


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
    cfg = from_dict(ModelConfig, storage.read_json(model_files.path(contract.MODEL_CONFIG)))
    vocab = storage.read_json(model_files.path(contract.VOCAB))
    model = InterestModel(cfg, len(vocab["items"]))
    data = storage.read_bytes(model_files.path(contract.WEIGHTS))
    contract.check_weights_archive(data, storage.join(model_dir, contract.WEIGHTS))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    lineage = model_files.optional_path(contract.LINEAGE)
    return LoadedModel(model.to(device), vocab, storage.read_json(lineage) if lineage else {},
                       hashlib.sha256(data).hexdigest())


def evaluate(model_dir: str, data_dir: str, split: str = "test", output_dir: str | None = None,
             batch_size: int = 512, protocol: str | None = None, overwrite: bool = False) -> dict:
    """Evaluate the model of ``model_dir`` on ``split`` ('valid' or 'test') of ``data_dir``; returns metrics.json's
    content and, when ``output_dir`` is given, publishes metrics.json and per_user.parquet there (its writer lock
    is taken first, so a second writer fails before any work).

    ``protocol`` (core/protocols.py) is the data's own (split.json) when None; another one is refused, since the
    data's items, users and targets were chosen for its protocol (preprocess again with ``--protocol``).
    ``overwrite``: replace whatever ``output_dir`` holds (else only an earlier evaluation, core.rundir)."""
    publishing = (rundir.writing(output_dir, contract.EVALUATION_KIND, overwrite=overwrite) if output_dir is not None
                  else contextlib.nullcontext())
    with publishing as staging:
        seqs = load_sequences(data_dir)
        if protocol is not None and protocols.get_protocol(protocol).name != seqs.protocol:
            raise ConfigError(f"--protocol: {data_dir} was preprocessed for protocol {seqs.protocol!r}, not "
                              f"{protocol!r}; evaluate it with --protocol {seqs.protocol}, or preprocess the events "
                              f"with `interest preprocess --protocol {protocol}`")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_model(model_dir, device)
        model = loaded.model
        seqs = renormalize_time(seqs, loaded.lineage)
        catalogue = Catalogue.match(loaded.vocab["items"], seqs.vocab["items"])
        eval_set = EvalSet.build(seqs, split, model.cfg.max_len)
        started = time.perf_counter()
        per_user, metrics = evaluate_model(model, eval_set, batch_size, device, bf16=device.type == "cuda",
                                           catalogue=catalogue)
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
