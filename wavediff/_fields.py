"""Build dataclasses from untrusted mappings (YAML), checking keys and value types."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from wavediff.errors import ConfigError


def build_dataclass(cls: type, data: Any, section: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking keys and value types."""
    if data is None:
        return cls()
    return cls(**check_fields(cls, data, section))


def check_fields(cls: type, data: Any, section: str) -> dict[str, Any]:
    """``data`` with each value checked against the type of the field of ``cls``."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {section!r} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in section {section!r}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = check_type(value, hints[name], f"{section}.{name}")
    return values


def check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_type(value, inner[0], where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        items = [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
