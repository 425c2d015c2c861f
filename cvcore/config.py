"""Typed configuration: nested dataclasses loaded from YAML, with dotted command-line overrides.

A pipeline declares its configuration as dataclasses (see ``rcnn/config.py`` and ``pose/config.py``)::

    @dataclass
    class TrainConfig:
        lr: float = 0.001
        steps: int = 1000

    @dataclass
    class Config:
        train: TrainConfig = field(default_factory=TrainConfig)

    cfg = load_config(Config, "configs/x.yaml", ["train.lr=0.01"])

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key, so a typo in a YAML file
or on the command line fails loudly instead of being ignored. Only ``build_*`` functions read configs; modules take
explicit arguments.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from cvcore.io import atomic_write_text

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "apply_overrides", "config_to_dict", "save_config", "parse_override"]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the offending key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where it is lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or (types.UnionType is not None and isinstance(tp, types.UnionType)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; users mean a number
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(types_))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, types_[name], key)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into ``("a.b", parsed value)``; the value is parsed as YAML (``1e-3``, ``[1, 2]``,
    ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.lr=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{key}': cannot parse value {raw!r}: {e}") from None
    return key, value


def apply_overrides(cfg: T, overrides: typing.Iterable[str]) -> T:
    """Return a copy of ``cfg`` with dotted overrides applied, each checked against the field's type."""
    data = config_to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        cls = type(cfg)
        for i, part in enumerate(parts):
            types_ = _field_types(cls)
            if part not in types_:
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"unknown key '{where}' (known: {', '.join(sorted(types_))})")
            if i == len(parts) - 1:
                tp = types_[part]
                if isinstance(value, float) and tp is int and float(value).is_integer():
                    value = int(value)
                node[part] = _coerce(value, tp, key)
                if dataclasses.is_dataclass(node[part]):
                    node[part] = config_to_dict(node[part])
            else:
                cls = types_[part]
                if not dataclasses.is_dataclass(cls):
                    raise ConfigError(f"'{'.'.join(parts[: i + 1])}' is not a section; cannot set '{key}'")
                node = node[part]
    return _from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (),
                data: dict | None = None) -> T:
    """Build the dataclass ``cls`` from a YAML file (or a dict), then apply dotted ``overrides``.

    Args:
        cls: the top-level config dataclass; every field must have a default.
        path: YAML file; keys missing from it keep their defaults.
        overrides: strings ``"section.key=value"``.
        data: a mapping used instead of ``path``.
    Raises:
        ConfigError: unknown key, wrong type, unreadable or malformed file (the message names the file or key).
    """
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        try:
            cfg = _from_dict(cls, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    else:
        cfg = _from_dict(cls, data or {})
    return apply_overrides(cfg, overrides)


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (lists for tuples) of a config dataclass, suitable for YAML/JSON and ``weights_only`` files."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
