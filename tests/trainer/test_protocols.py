"""Evaluation protocols on the trainer side: the generative-recommenders ranking mirrors its eval code (target =
last event, only the input window masked, a masked target is a miss), training on its data has no validation
target, and metrics.json names the protocol."""

from __future__ import annotations

import io
import json

import pytest
import torch

from core.configs import ConfigError
from pipelines import cli
from tests.support.data import write_preprocessed
from trainer import checkpoint
from trainer.data import EvalSet, load_sequences
from trainer.evaluate import evaluate, evaluate_model, user_embeddings
from trainer.metrics import full_ranking_metrics, history_csr
from trainer.model import InterestModel
from trainer.train import train

WINDOW = 5  # max_len: shorter than most histories, so "input window" and "whole history" differ


@pytest.fixture(scope="module")
def gr_data(tmp_path_factory):
    return write_preprocessed(tmp_path_factory.mktemp("gr-data"), last_event=True)


def generative_recommenders_ranks(user_emb, item_emb, inputs, targets) -> list[int]:
    """research/data/eval.py, one user at a time: every item is a candidate (get_eval_state), the ids of the
    model's input are invalid (eval_metrics_v2_from_tensors: invalid_ids=past_ids), the target's rank is its place
    in the filtered top-k, and a target that is itself invalid never appears there (MAX_K + 1: a miss)."""
    scores = (user_emb.double() @ item_emb.double().t()).numpy()
    ranks = []
    for u, target in enumerate(targets.tolist()):
        invalid = set(inputs[u])
        if target in invalid:
            ranks.append(10**9)
            continue
        candidates = [c for c in range(1, item_emb.shape[0]) if c not in invalid]
        ranks.append(1 + sum(scores[u, c] > scores[u, target] for c in candidates))
    return ranks


def test_ranking_mirrors_the_generative_recommenders_eval(gr_data, model_kit):
    seqs = load_sequences(str(gr_data))
    assert seqs.protocol == "generative-recommenders"
    eval_set = EvalSet.build(seqs, "test", WINDOW)
    assert len(eval_set) == seqs.num_users  # every user, target = the last event
    last = seqs.columns["items"][seqs.offsets + seqs.length - 1].long()
    assert torch.equal(eval_set.targets, last)
    torch.manual_seed(0)
    model = InterestModel(model_kit.tiny(max_len=WINDOW), seqs.num_items)
    per_user, metrics = evaluate_model(model, eval_set, batch_size=16)
    user_emb = user_embeddings(model.eval(), eval_set, 16, torch.device("cpu"))
    inputs = [seqs.columns["items"][seqs.offsets[u] + e - min(e, WINDOW): seqs.offsets[u] + e].tolist()
              for u, e in zip(eval_set.user.tolist(), eval_set.end.tolist(), strict=True)]
    expected = generative_recommenders_ranks(user_emb, model.item_embeddings().detach(), inputs, eval_set.targets)
    ours = per_user["rank"].tolist()
    assert [min(r, seqs.num_items + 1) for r in expected] == ours
    assert metrics["protocol"] == "generative-recommenders" and metrics["items"] == seqs.num_items
    # Masking the whole history instead ranks some targets higher: the protocols differ on this data.
    whole = full_ranking_metrics(user_emb, model.item_embeddings().detach(), eval_set.targets,
                                 eval_set.history("history"))["rank"]
    assert (whole < per_user["rank"]).any()


@pytest.mark.parametrize(("keep_target", "rank"), [(True, 1), (False, 4)])
def test_a_target_in_the_masked_items_stays_a_candidate_or_is_a_miss(keep_target, rank):
    """ours keeps a re-consumed target (re-consumption); generative-recommenders masks it: rank N + 1."""
    user = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[0.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])  # item 1 scores best
    history = history_csr([[1, 2]])
    out = full_ranking_metrics(user, items, torch.tensor([1]), history, keep_target=keep_target)
    assert out["rank"].tolist() == [rank] and out["recall@1"].tolist() == [float(keep_target)]


def test_training_on_last_event_data_validates_nothing_and_exports_the_last_weights(gr_data, tmp_path, kit):
    summary = train(str(gr_data), str(tmp_path), kit.TINY_MODEL, kit.tiny_train(epochs=1))
    assert summary["protocol"] == "generative-recommenders" and summary["stopped"] == "epochs"
    assert summary["best"]["step"] is None and summary["history"] == []
    assert "no validation targets (protocol 'generative-recommenders')" in summary["stop_note"]
    assert "the last weights are exported" in summary["stop_note"]
    exported = torch.load(io.BytesIO((tmp_path / "model.pt").read_bytes()), weights_only=True)
    state, _ = checkpoint.load_latest(str(tmp_path / "checkpoints"))
    assert all(torch.equal(exported[k], state["model"][k]) for k in exported)


def test_metrics_name_the_protocol_and_another_one_is_refused(gr_data, tmp_path, kit, capsys):
    model_dir = tmp_path / "model"
    train(str(gr_data), str(model_dir), kit.TINY_MODEL, kit.tiny_train(epochs=1))
    metrics = evaluate(str(model_dir), str(gr_data), "test", str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["protocol"] == "generative-recommenders"
    assert metrics["users"] == kit.NUM_USERS
    assert evaluate(str(model_dir), str(gr_data), "valid")["users"] == 0  # no validation targets
    with pytest.raises(ConfigError, match="--protocol: .* was preprocessed for protocol 'generative-recommenders'"):
        evaluate(str(model_dir), str(gr_data), "test", protocol="ours")
    assert cli.main(["evaluate", "--model", str(model_dir), "--data", str(gr_data), "--output", str(tmp_path / "e2"),
                     "--protocol", "generative-recommenders"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "generative-recommenders"
