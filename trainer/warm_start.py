"""Warm start: begin training from an exported model (the production champion, ``TrainConfig.init_from``).

Item rows are matched by ``item_id``: an item both catalogues hold gets its trained row; an item new to today's
data keeps its fresh initialisation; items that left the catalogue are dropped. Every other weight is copied when
its shape matches exactly; an architecture that differs (another width, depth, MLP, position or time encoding)
is refused with the first weight that does not fit, since a partial copy would silently train a different model.
The run's lineage records what it started from.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from core import contract, storage
from core.configs import ConfigError
from trainer.model import InterestModel

ITEM_TABLES = ("item_embedding.weight", "output_embedding.weight")  # (N + 1, D) rows by item index


def initialize(model: InterestModel, source_dir: str, vocab: dict) -> dict[str, Any]:
    """Copy the weights of the model exported in ``source_dir`` into ``model`` (trained on ``vocab``'s items);
    returns the lineage record ``{model_dir, model_sha256, items_copied, items_new}``."""
    from trainer.evaluate import load_model, open_model

    source = load_model(source_dir, torch.device("cpu"))
    theirs = source.model.state_dict()
    ours = model.state_dict()
    for key, value in ours.items():
        if key in ITEM_TABLES:
            if key not in theirs:
                raise ConfigError(f"init_from {source_dir}: it has no {key} (tie_embeddings differs); the architecture "
                                  "must match to warm-start")
            continue
        if key not in theirs or theirs[key].shape != value.shape:
            found = tuple(theirs[key].shape) if key in theirs else "missing"
            raise ConfigError(f"init_from {source_dir}: the architecture differs at {key} ({found} there, "
                              f"{tuple(value.shape)} here); warm starts need the same ModelConfig shape")
    unexpected = sorted(set(theirs) - set(ours))
    if unexpected:
        raise ConfigError(f"init_from {source_dir}: the architecture differs: it has {unexpected[0]}, this model not")
    index = {item: i + 1 for i, item in enumerate(source.vocab["items"])}
    rows = torch.tensor([index.get(item, 0) for item in vocab["items"]], dtype=torch.long)  # 0: a new item
    known = rows > 0
    with torch.no_grad():
        for key, value in ours.items():
            if key in ITEM_TABLES:
                value[1:][known] = theirs[key][rows[known]].to(value.dtype)
            else:
                value.copy_(theirs[key])
    weights = storage.read_bytes(open_model(source_dir).path(contract.WEIGHTS))
    return {"model_dir": source_dir, "model_sha256": hashlib.sha256(weights).hexdigest(),
            "items_copied": int(known.sum()), "items_new": int((~known).sum())}
