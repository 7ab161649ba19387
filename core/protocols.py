"""Evaluation protocols: what a test Recall@10 means, named once for both sides of the data contract.

A protocol fixes which items and users are kept, which event is the test target and what training may use
(preprocessing: ``PreprocessConfig.protocol`` resolves the fields below), and which of a user's earlier items are
not candidates when ranking (evaluation: ``trainer.evaluate``). The preprocessed data records its protocol in
``split.json``; evaluation reads it there. docs/protocols.md compares them line by line with the code they follow.

- ``ours``: items with >= 5 ratings, users with >= 3 events, leave-one-out with a held-out validation event
  (second last) and test event (last); the user's WHOLE history is masked; a target seen before stays a
  candidate (re-consumption).
- ``generative-recommenders``: the public HSTU evaluation on ML-1M (facebookresearch/generative-recommenders,
  research/data/{preprocessor,dataset,reco_dataset,eval}.py): no item or user filtering (every rated item is in the
  catalogue), the last event is the test target and training uses every event before it (no held-out
  validation event), and only the ids in the model's input window (the last max_len events before the target)
  are masked; a target among them is masked too (a miss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.configs import ConfigError

ProtocolName = Literal["ours", "generative-recommenders"]
# history: every item the user saw before the target; input_window: the items of the model's input only.
HistoryMask = Literal["history", "input_window"]


@dataclass(frozen=True)
class Protocol:
    name: str
    # PreprocessConfig fields this protocol resolves when they are unset (None).
    preprocess: Mapping[str, Any]
    # True: an explicit other value of one of those fields is refused (the protocol IS those values).
    fixed: bool
    # Which earlier items are not candidates at ranking time.
    mask: HistoryMask
    # A target that is also among the masked items: still a candidate (True) or masked like them (False).
    target_stays_candidate: bool
    # Whether the data holds a validation target per user (model selection, early stopping).
    validation: bool
    # One line for the CLI and the docs.
    note: str = field(default="")


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("ours", {"min_item_count": 5, "min_user_events": 3, "split": "leave_one_out"}, fixed=False,
             mask="history", target_stays_candidate=True, validation=True,
             note="items >= 5 ratings, leave-one-out with a held-out validation event, whole history masked"),
    Protocol("generative-recommenders",
             {"min_rating": None, "min_item_count": 1, "min_user_events": 1, "split": "last_event"}, fixed=True,
             mask="input_window", target_stays_candidate=False, validation=False,
             note="every rated item, last event = test target, training on all earlier events, only the input "
                  "window masked (HSTU's research/data/eval.py)"),
)}
DEFAULT = "ours"


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown one is a ConfigError listing the allowed names."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"protocol: {name!r} is not allowed; choose one of {', '.join(PROTOCOLS)}") from None
