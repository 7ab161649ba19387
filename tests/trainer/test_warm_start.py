"""Warm starts (TrainConfig.init_from): item rows follow their item_id into a new catalogue, other weights are
copied exactly, another architecture is refused, and the lineage says where a model started from."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from core import contract, storage
from core.configs import ConfigError
from trainer.evaluate import load_model
from trainer.model import InterestModel
from trainer.train import train
from trainer.warm_start import initialize


@pytest.fixture(scope="module")
def source(tiny_data, tmp_path_factory, kit):
    """A trained tiny model to start from."""
    out = tmp_path_factory.mktemp("source")
    train(str(tiny_data), str(out), kit.TINY_MODEL, kit.tiny_train(epochs=None, max_steps=8))
    return out


def test_item_rows_follow_their_ids_and_other_weights_are_copied(source, kit):
    trained = load_model(str(source), torch.device("cpu"))
    old_items = trained.vocab["items"]  # i1 .. i40
    # Today's catalogue: i3 and i1 kept (in another order), i2 gone, two new items.
    vocab = {"padding_index": 0, "items": ["i3", "new-a", "i1", "new-b"]}
    torch.manual_seed(0)
    model = InterestModel(kit.TINY_MODEL, len(vocab["items"]))
    fresh = model.item_embedding.weight.detach().clone()
    record = initialize(model, str(source), vocab)
    table, theirs = model.item_embedding.weight.detach(), trained.model.item_embedding.weight.detach()
    assert torch.equal(table[1], theirs[old_items.index("i3") + 1])
    assert torch.equal(table[3], theirs[old_items.index("i1") + 1])
    assert torch.equal(table[2], fresh[2]) and torch.equal(table[4], fresh[4])  # new items: their own init
    assert torch.equal(table[0], torch.zeros_like(table[0]))  # padding stays zero
    for key, value in model.state_dict().items():
        if key != "item_embedding.weight":
            assert torch.equal(value, trained.model.state_dict()[key]), key
    assert (record["items_copied"], record["items_new"]) == (2, 2)
    assert record["model_dir"] == str(source) and len(record["model_sha256"]) == 64


def test_another_architecture_is_refused_naming_the_weight(source, kit):
    wider = dataclasses.replace(kit.TINY_MODEL, d_model=32)
    with pytest.raises(ConfigError, match="architecture differs at .*\\(.*16.*\\)"):
        initialize(InterestModel(wider, 40), str(source), {"padding_index": 0, "items": [f"i{i}" for i in range(40)]})
    gated = dataclasses.replace(kit.TINY_MODEL, mlp="swiglu")
    with pytest.raises(ConfigError, match="architecture differs"):
        initialize(InterestModel(gated, 40), str(source), {"padding_index": 0, "items": [f"i{i}" for i in range(40)]})


def test_a_warm_started_run_records_its_source_and_a_resume_keeps_it(source, tiny_data, tmp_path, kit):
    cfg = kit.tiny_train(epochs=None, max_steps=4, init_from=str(source))
    summary = train(str(tiny_data), str(tmp_path / "warm"), kit.TINY_MODEL, cfg)
    lineage = json.loads((tmp_path / "warm" / contract.LINEAGE).read_text())
    assert lineage["init_from"]["model_dir"] == str(source) and lineage["init_from"]["items_copied"] == 40
    assert lineage["data"]["digest"] and lineage["data"]["timestamp_min"] is not None
    # Rerun: it resumes from its checkpoint (not from the source again); the lineage still names the source.
    again = train(str(tiny_data), str(tmp_path / "warm"), kit.TINY_MODEL, cfg)
    assert again["resumed_from"] == [4] and summary["steps"] == 4
    assert json.loads((tmp_path / "warm" / contract.LINEAGE).read_text())["init_from"] == lineage["init_from"]


def test_an_unresolved_registry_reference_is_refused(tiny_data, tmp_path, kit):
    cfg = kit.tiny_train(epochs=None, max_steps=2, init_from="registry:/somewhere")
    with pytest.raises(ConfigError, match="must be resolved"):
        train(str(tiny_data), str(tmp_path / "out"), kit.TINY_MODEL, cfg)
    assert not storage.exists(str(tmp_path / "out" / contract.WEIGHTS))
