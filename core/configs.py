"""Config conventions shared by every stage.

Each stage has a frozen dataclass beside its code (PreprocessConfig, ModelConfig, TrainConfig, GateConfig, ...).
This module turns JSON/YAML files and ``--set key=value`` overrides into those dataclasses, checks every field
(unknown keys, ``Literal`` choices, types, integers that fit in 64 bits) and writes them back beside outputs, so
every run can be reproduced.

YAML is read by ``safe_yaml``: the safe loader, and no anchors or aliases, refused before anything is built (a
few hundred bytes of nested aliases would otherwise expand to gigabytes), and files over ``MAX_CONFIG_BYTES``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from core.errors import ConfigError

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few kB; anything this big is a mistake or an attack
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_literals(cfg: Any) -> None:
    """Raise ConfigError if a ``Literal``-typed field of ``cfg`` holds a value outside its choices.

    Call it first in ``__post_init__``; field-specific checks follow it.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            value = getattr(cfg, f.name)
            allowed = get_args(hint)
            if value not in allowed:
                raise ConfigError(
                    f"{type(cfg).__name__}.{f.name}: {value!r} is not allowed; choose one of "
                    + ", ".join(repr(a) for a in allowed)
                )


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError(``field: message``) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def _coerce(value: Any, hint: Any, field: str) -> Any:
    """Convert a parsed JSON/YAML value to the field's annotated type, or raise ConfigError."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        return value  # checked by check_literals with the full list of choices
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, field)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{field}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{field}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, prefix=f"{field}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field}: expected a list, got {value!r}")
        args = get_args(hint)
        item_hint = args[0] if args else Any
        items = [_coerce(v, item_hint, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{field}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{field}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, str):  # PyYAML reads "1e9" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise ConfigError(f"{field}: {value!r} does not fit in a 64-bit integer")
            return value
        raise ConfigError(f"{field}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{field}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{field}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming the allowed ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field of {cls.__name__}; allowed: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def safe_yaml(text: str, source: str) -> Any:
    """Parse JSON/YAML text with the safe loader, refusing anchors and aliases before anything is built.

    Errors are one line naming ``source`` and the line/column (PyYAML's own messages span several lines).
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text):,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: an alias is never expanded here
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise ConfigError(f"{source}: line {mark.line + 1}, column {mark.column + 1}: YAML anchors and "
                                  "aliases (&name, *name) are not allowed in configs; write the values out")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid JSON/YAML: {where}{problem}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file (local path or object-store URI) into a dict."""
    from core import storage

    try:
        raw = storage.read_bytes(str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"--config: {path} is a directory, not a JSON/YAML file") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path}: {len(raw):,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    data = safe_yaml(text, f"--config {path}") if text.strip() else {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML: 128, 1e-3, true, [a, b]) to a nested dict."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        value = safe_yaml(raw, f"--set {key}") if raw.strip() else ""
        parts = key.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (),
         base: dict[str, Any] | None = None) -> T:
    """``cls`` from ``base`` (e.g. a preset) updated by a config file, then by ``--set`` overrides."""
    data = dict(base or {})
    if path:
        data = _deep_update(data, read_config_file(path))
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as pretty JSON, atomically, beside a run's outputs."""
    from core import storage

    storage.write_json(str(path), to_dict(cfg))
