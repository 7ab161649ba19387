"""preprocessing/synthetic.py: exact size, the same files for the same seed, a Zipf-like head, ~50 events per user,
two years of timestamps in order within each user."""

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core.configs import ConfigError
from preprocessing.synthetic import END, SECONDS_PER_DAY, SyntheticConfig, generate


def test_shape_size_and_determinism(tmp_path):
    cfg = SyntheticConfig(events=50_001, rows_per_file=20_000, seed=5)
    paths = generate(cfg, tmp_path / "a")
    assert [p.name for p in paths] == ["events-00000.parquet", "events-00001.parquet", "events-00002.parquet"]
    table = pq.read_table(paths)
    assert table.num_rows == 50_001 and table.column_names == ["user_id", "item_id", "timestamp"]
    assert [pq.read_table(p) for p in generate(cfg, tmp_path / "b")] == [pq.read_table(p) for p in paths]
    users = pc.value_counts(table["user_id"]).field("counts").to_numpy()
    assert 30 <= users.mean() <= 70  # about 50 events per user, from a long-tailed distribution
    assert users.max() > 3 * users.mean()
    items = np.sort(pc.value_counts(table["item_id"]).field("counts").to_numpy())[::-1]
    assert items[0] > 20 * np.median(items)  # a Zipf-like head
    stamps = table["timestamp"].to_numpy()
    assert stamps.min() >= END - 730 * SECONDS_PER_DAY and stamps.max() < END
    user = table["user_id"].to_numpy(zero_copy_only=False)
    same = user[1:] == user[:-1]
    assert (np.diff(stamps)[same] >= 0).all()  # each user's events in time order


def test_bad_size_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="SyntheticConfig.events"):
        SyntheticConfig(events=0)
