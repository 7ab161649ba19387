"""Config conventions: files + --set overrides -> validated frozen dataclasses, errors naming the field."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest

from core import configs
from core.configs import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = 4  # an int field
    rate: float = 0.5  # a float field


@dataclasses.dataclass(frozen=True)
class Outer:
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"  # a named choice
    tags: tuple[str, ...] = ()  # a list in files, a tuple here
    inner: Inner = dataclasses.field(default_factory=Inner)
    cap: float | None = None  # optional

    def __post_init__(self):
        configs.check_literals(self)
        configs.require(self.inner.size > 0, "inner.size", f"must be positive, got {self.inner.size}")


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("norm: rmsnorm\ninner:\n  size: 8\n")
    cfg = configs.load(Outer, path, ["inner.rate=1e-3", "tags=[a, b]", "cap=2"])
    assert cfg == Outer(norm="rmsnorm", tags=("a", "b"), inner=Inner(size=8, rate=1e-3), cap=2.0)


def test_json_file_and_base(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"inner": {"rate": 0.25}}))
    cfg = configs.load(Outer, path, base={"norm": "rmsnorm", "inner": {"size": 2}})
    assert cfg.norm == "rmsnorm" and cfg.inner == Inner(size=2, rate=0.25)


def test_literal_error_names_field_and_choices():
    with pytest.raises(ConfigError, match=r"Outer.norm: 'batchnorm' is not allowed; choose one of 'layernorm', 'rmsnorm'"):
        configs.load(Outer, overrides=["norm=batchnorm"])


def test_unknown_field_lists_allowed():
    with pytest.raises(ConfigError, match=r"inner.sise: unknown field of Inner; allowed: size, rate"):
        configs.load(Outer, overrides=["inner.sise=3"])


@pytest.mark.parametrize("override, message", [
    ("inner.size=abc", "inner.size: expected an integer"),
    ("inner.size=0", "inner.size: must be positive"),
    ("inner.rate=true", "inner.rate: expected a number"),
    ("noequals", "--set: expected key=value"),
    ("inner=3", "inner: expected a mapping"),
])
def test_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        configs.load(Outer, overrides=[override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="--config: file not found"):
        configs.load(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("norm: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid JSON/YAML"):
        configs.load(Outer, bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        configs.load(Outer, listing)


def test_save_round_trip(tmp_path):
    cfg = Outer(norm="rmsnorm", tags=("x",), inner=Inner(size=3, rate=0.1), cap=None)
    configs.save(cfg, tmp_path / "out" / "cfg.json")
    assert configs.load(Outer, tmp_path / "out" / "cfg.json") == cfg
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "cfg.json"]  # no temp files left


def billion_laughs() -> str:
    """~440 bytes of nested aliases: 10^9 "lol" strings once a loader expands them."""
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_before_anything_is_built(tmp_path, capsys):
    import tracemalloc

    from core import storage  # noqa: F401 - imported by read_config_file; imported here, outside the trace
    from pipelines.cli import main

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert 400 <= bomb.stat().st_size <= 500
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"bomb.yaml: line 1, column 4: YAML anchors and aliases"):
            configs.read_config_file(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # bytes: the aliases were never expanded
    with pytest.raises(ConfigError, match="anchors and aliases"):
        configs.apply_overrides({}, [f"columns={billion_laughs()}"])
    assert main(["preprocess", "--input", str(tmp_path / "e.csv"), "--output", str(tmp_path / "out"), "--config",
                 str(bomb)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"interest preprocess: error: --config {bomb}: line 1") and not (tmp_path / "out").exists()


def test_whole_numbers_written_in_exponent_form_are_integers():
    """PyYAML reads 1e9 (no dot) as a string; an integer field takes it as the number it is."""
    from preprocessing.config import PreprocessConfig

    assert configs.load(PreprocessConfig, overrides=["max_timestamp=1e9"]).max_timestamp == 1_000_000_000
    with pytest.raises(ConfigError, match="max_timestamp"):
        configs.load(PreprocessConfig, overrides=["max_timestamp=1.5e9x"])
