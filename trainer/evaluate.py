"""Run a model over a split's users and rank the whole catalogue: the one code path behind validation during
training and ``interest evaluate``.

User embeddings come from each user's last ``max_len`` events before the target; ``trainer.evaluation`` ranks
every item against them with the whole history masked. ``evaluate`` writes ``metrics.json`` and
``per_user.parquet`` as docs/contracts.md ("Evaluation output") describes.
"""

from __future__ import annotations

import contextlib
import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from pipelines import storage
from pipelines.configs import ConfigError, from_dict
from trainer.config import ModelConfig
from trainer.data import EvalSet, load_sequences
from trainer.evaluation import DEFAULT_KS, TOP_ITEMS, full_ranking_metrics, norm_stats, summarize
from trainer.model import InterestModel


@torch.no_grad()
def user_embeddings(model: InterestModel, eval_set: EvalSet, batch_size: int, device: torch.device,
                    bf16: bool = False) -> Tensor:
    """(M, D) float32 user embeddings on ``device``, in the order of ``eval_set``."""
    out = torch.empty(len(eval_set), model.cfg.d_model, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for positions, inputs in eval_set.input_batches(batch_size):
        with autocast:
            emb = model.user_embedding({k: v.to(device, non_blocking=True) for k, v in inputs.items()})
        out[positions.to(device)] = emb.float()
    return out


def evaluate_model(model: InterestModel, eval_set: EvalSet, batch_size: int = 512,
                   device: torch.device | None = None, bf16: bool = False) -> tuple[dict[str, Tensor], dict]:
    """Per-user metrics and their summary (Recall@k, NDCG@10, MRR, coverage@10, user/item norm statistics)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        users = user_embeddings(model, eval_set, batch_size, device, bf16)
        items = model.item_embeddings().detach().float()
        per_user = full_ranking_metrics(users, items, eval_set.targets.to(device), eval_set.history(),
                                        DEFAULT_KS, batch_size)
    finally:
        model.train(was_training)
    metrics = {**summarize(per_user, model.num_items), **norm_stats(users, "user_norm"),
               **norm_stats(items[1:], "item_norm")}
    return per_user, metrics


def load_model(model_dir: str, device: torch.device) -> InterestModel:
    """The exported model of ``model_dir`` (model_config.json + model.pt, read with weights_only=True)."""
    cfg = from_dict(ModelConfig, storage.read_json(storage.join(model_dir, "model_config.json")))
    vocab = storage.read_json(storage.join(model_dir, "vocab.json"))
    model = InterestModel(cfg, len(vocab["items"]))
    data = storage.read_bytes(storage.join(model_dir, "model.pt"))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.to(device)


def evaluate(model_dir: str, data_dir: str, split: str = "test", output_dir: str | None = None,
             batch_size: int = 512) -> dict:
    """Evaluate the model of ``model_dir`` on ``split`` ('valid' or 'test') of ``data_dir``; returns metrics.json's
    content and, when ``output_dir`` is given, writes metrics.json and per_user.parquet there."""
    for name in ("model.pt", "model_config.json", "vocab.json"):
        if not storage.exists(storage.join(model_dir, name)):
            raise ConfigError(f"--model: {model_dir} has no {name}; is it an `interest train` output?")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seqs = load_sequences(data_dir)
    model = load_model(model_dir, device)
    if storage.read_json(storage.join(model_dir, "vocab.json"))["items"] != seqs.vocab["items"]:
        raise ConfigError(f"--data: {data_dir} indexes items differently from the model's vocab.json in {model_dir}")
    eval_set = EvalSet.build(seqs, split, model.cfg.max_len)
    started = time.perf_counter()
    per_user, metrics = evaluate_model(model, eval_set, batch_size, device, bf16=device.type == "cuda")
    seconds = time.perf_counter() - started
    metrics.update(params=model.num_parameters(), users_per_second=len(eval_set) / seconds if seconds else 0.0,
                   split=split)
    if output_dir is not None:
        columns = {"user_index": eval_set.user_index.numpy()}
        columns.update({k: v.numpy() for k, v in per_user.items() if k != TOP_ITEMS})
        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        storage.write_bytes(storage.join(output_dir, "per_user.parquet"), buffer.getvalue())
        storage.write_json(storage.join(output_dir, "metrics.json"), metrics)
    return metrics
