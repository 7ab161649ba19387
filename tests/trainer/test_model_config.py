"""ModelConfig validation and derived values."""

from __future__ import annotations

import pytest

from core.configs import ConfigError, load
from trainer.model_config import ModelConfig


@pytest.mark.parametrize("overrides,message", [
    ({"position": "absolute"}, r"ModelConfig\.position: 'absolute' is not allowed.*'learned', 'rope', 'rope\+learned'"),
    ({"time_encoding": "relative"}, r"ModelConfig\.time_encoding: .*'none', 'absolute', 'hybrid'"),
    ({"norm": "batchnorm"}, r"ModelConfig\.norm: .*'layernorm', 'rmsnorm'"),
    ({"mlp": "relu"}, r"ModelConfig\.mlp: .*'gelu', 'swiglu', 'geglu'"),
    ({"block": "sandwich"}, r"ModelConfig\.block: .*'serial', 'parallel'"),
    ({"d_model": 0}, r"ModelConfig\.d_model: must be >= 1"),
    ({"n_layer": 0}, r"ModelConfig\.n_layer: must be >= 1"),
    ({"max_len": 0}, r"ModelConfig\.max_len: must be >= 1"),
    ({"d_model": 64, "n_head": 3}, r"ModelConfig\.n_head: d_model 64 must divide by n_head 3"),
    ({"d_model": 6, "n_head": 2, "position": "rope"}, r"ModelConfig\.position: 'rope' .*head_dim .* must be even"),
    ({"d_model": 6, "n_head": 2, "position": "rope+learned"}, r"ModelConfig\.position: .*must be even"),
    ({"dropout": 1.0}, r"ModelConfig\.dropout: must be in \[0, 1\)"),
    ({"dropout": -0.1}, r"ModelConfig\.dropout"),
    ({"attention_dropout": 1.0}, r"ModelConfig\.attention_dropout: must be in \[0, 1\)"),
    ({"d_ff": 0}, r"ModelConfig\.d_ff: must be >= 1 or null"),
    ({"d_ff_ratio": 0.0}, r"ModelConfig\.d_ff_ratio: must be > 0"),
])
def test_invalid_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**overrides)


def test_odd_head_dim_is_fine_without_rope():
    assert ModelConfig(d_model=6, n_head=2, position="learned").head_dim == 3


def test_loads_from_overrides_with_type_checks():
    cfg = load(ModelConfig, overrides=["d_model=32", "position=rope", "bias=true", "d_ff=null"])
    assert (cfg.d_model, cfg.position, cfg.bias, cfg.d_ff) == (32, "rope", True, None)
    with pytest.raises(ConfigError, match="d_model: expected an integer"):
        load(ModelConfig, overrides=["d_model=wide"])
    with pytest.raises(ConfigError, match="d_modle: unknown field of ModelConfig"):
        load(ModelConfig, overrides=["d_modle=32"])


@pytest.mark.parametrize("mlp,bias,expected", [
    ("gelu", False, 256),  # 4 x d_model
    ("swiglu", False, 171),  # 256 x 2/3
    ("geglu", False, 171),
    ("swiglu", True, 170),  # 256 x 129/194: the two extra bias vectors count too
])
def test_ff_dim_resolution(mlp, bias, expected):
    assert ModelConfig(mlp=mlp, bias=bias).ff_dim == expected
    assert ModelConfig(mlp=mlp, bias=bias, d_ff=100).ff_dim == 100  # a given width is taken as it is
    assert ModelConfig().head_dim == 32
