"""Typed configuration: dataclasses loaded from YAML or dicts, with errors that name the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _convert(value: Any, annotation, key: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r}.")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}.")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}.")
        item_type = args[0] if args else Any
        items = [_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation in (str, bool):
        if isinstance(value, annotation):
            return value
    elif typing.get_origin(annotation) is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}.")
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}.")


def from_dict(cls: type[T], values: dict, prefix: str = "") -> T:
    """Builds dataclass `cls` from `values`, checking every key and type.

    Nested dataclass fields take nested mappings. Raises `ConfigError` naming the key
    (dotted for nested keys) when a key is unknown or a value has the wrong type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"Unknown config key {prefix}{unknown[0]!s} for {cls.__name__}; known keys: {sorted(fields)}."
        )
    defaults = {f.name: f.default_factory() for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}
    converted = {
        name: _convert(_over_default(value, defaults.get(name)), hints[name], f"{prefix}{name}")
        for name, value in values.items()
    }
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from error


def _over_default(value, default):
    """A partial mapping for a nested dataclass field keeps the field's default for the keys it omits."""
    if not (isinstance(value, dict) and dataclasses.is_dataclass(default)):
        return value
    return {**to_dict(default), **value}


def to_dict(config) -> dict:
    """The config as plain YAML/JSON-ready data (tuples become lists)."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def set_key(values: dict, dotted_key: str, value: Any) -> None:
    """Sets `a.b.c` in a nested dict, creating intermediate mappings."""
    *parents, last = dotted_key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted_key}: {part} is not a mapping.")
    node[last] = value


def load_config(cls: type[T], source: str | Path | dict | T | None = None, overrides: dict | None = None) -> T:
    """Loads `cls` from a YAML file, a dict or an instance, then applies dotted-key overrides.

    `overrides` maps keys such as `"epochs"` or `"backbone.num_layers"` to values.
    """
    if source is None:
        values: dict = {}
    elif isinstance(source, cls):
        values = to_dict(source)
    elif isinstance(source, dict):
        values = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"Config file {path} must hold a mapping, got {type(values).__name__}.")
    merged = _nested_copy(values)
    for key, value in (overrides or {}).items():
        set_key(merged, key, value)
    return from_dict(cls, merged)


def _nested_copy(values: dict) -> dict:
    return {k: _nested_copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def flat_fields(cls, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """`(dotted_key, annotation, default)` for every leaf field, nested dataclasses expanded."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            rows.extend(flat_fields(annotation, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            )
            rows.append((f"{prefix}{f.name}", annotation, default))
    return rows
