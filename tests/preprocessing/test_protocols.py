"""The generative-recommenders protocol's data from the same Beam pipeline: every rated item stays in the
catalogue, the last event (by time, ties in file order) is each user's test target, and training may use every
event before it; ``ours`` filters rare items and holds out a validation event. An ML-100K-shaped fixture: every
user has >= 20 ratings, items have a long tail (many with fewer than 5)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.configs import ConfigError
from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import run
from tests.preprocessing.test_pipeline import NOW, read_output

USERS, ITEMS = 12, 40


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> tuple[Path, list[tuple[str, str, int]]]:
    """user,item,timestamp rows: item k is rated by about 12 / (k + 1) users (items 20.. only once or twice), and
    a few users end on a timestamp tie."""
    rng = random.Random(3)
    rows = []
    for u in range(USERS):
        items = rng.sample(range(ITEMS), 20 + u % 5)
        items.sort(key=lambda k: k + rng.random() * 8)  # popular items first, with some shuffling
        stamps = sorted(rng.sample(range(1000, 5000), len(items)))
        if u % 3 == 0:
            stamps[-1] = stamps[-2]  # the last two events share a second: file order decides
        rows += [(f"u{u:02d}", f"i{k:02d}", t) for k, t in zip(items, stamps, strict=True)]
    rng.shuffle(rows)
    path = tmp_path_factory.mktemp("events") / "ratings.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path, rows


@pytest.fixture(scope="module")
def outputs(events, tmp_path_factory) -> dict[str, dict]:
    path, _ = events
    out = {}
    for protocol in ("ours", "generative-recommenders"):
        target = tmp_path_factory.mktemp(protocol) / "data"
        run(str(path), str(target), PreprocessConfig(protocol=protocol, max_timestamp=NOW))
        out[protocol] = read_output(target)
    return out


def last_events(rows: list[tuple[str, str, int]]) -> dict[str, str]:
    """Each user's last item by timestamp; among tied timestamps the row that comes last in the file."""
    last: dict[str, tuple[int, int, str]] = {}
    for position, (user, item, stamp) in enumerate(rows):
        last[user] = max(last.get(user, (-1, -1, "")), (stamp, position, item))
    return {user: item for user, (_, _, item) in last.items()}


def test_every_rated_item_is_in_the_catalogue(events, outputs):
    _, rows = events
    rated = sorted({item for _, item, _ in rows})
    gr, ours = outputs["generative-recommenders"], outputs["ours"]
    assert gr["vocab"]["items"] == rated and gr["stats"]["items"] == len(rated)
    assert gr["stats"]["filtered_rows"] == 0 and gr["stats"]["users"] == USERS
    rare = {item for item in rated if sum(r[1] == item for r in rows) < 5}
    assert rare and set(ours["vocab"]["items"]) == set(rated) - rare  # ours drops them: the test can tell


def test_last_event_is_the_test_target_and_training_uses_all_before_it(events, outputs):
    _, rows = events
    gr = outputs["generative-recommenders"]
    items = gr["vocab"]["items"]
    assert gr["split"] == {"method": "last_event", "cutoff": None, "protocol": "generative-recommenders"}
    assert gr["config"]["min_item_count"] == 1 and gr["config"]["min_user_events"] == 1
    targets = last_events(rows)
    for seq in gr["sequences"].to_pylist():
        n = len(seq["item_index"])
        assert seq["train_end"] == seq["valid_end"] == n - 1  # no validation target; events [0, n-1) train
        assert items[seq["item_index"][n - 1] - 1] == targets[seq["user_id"]]
    for seq in outputs["ours"]["sequences"].to_pylist():  # ours holds the second last event out for validation
        assert (seq["train_end"], seq["valid_end"]) == (len(seq["item_index"]) - 2, len(seq["item_index"]) - 1)


@pytest.mark.parametrize(("fields", "message"), [
    ({"min_item_count": 5}, "PreprocessConfig.min_item_count: protocol 'generative-recommenders' needs 1"),
    ({"split": "leave_one_out"}, "PreprocessConfig.split: protocol 'generative-recommenders' needs 'last_event'"),
    ({"min_rating": 4.0}, "PreprocessConfig.min_rating: protocol 'generative-recommenders' needs None"),
])
def test_the_protocol_refuses_other_values_of_its_fields(fields, message):
    with pytest.raises(ConfigError, match=message):
        PreprocessConfig(protocol="generative-recommenders", **fields)
    PreprocessConfig(protocol="ours", **fields)  # ours only sets defaults
