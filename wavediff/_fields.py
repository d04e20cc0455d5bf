"""Build dataclasses from untrusted mappings (YAML), checking keys and value types."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from typing import Any, Union

import yaml

from wavediff.errors import ConfigError


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything this large is not one
MAX_INT = 2 ** 63 - 1
# An exponent without a decimal point ("1e-4") is a float in YAML 1.2 but a string to PyYAML.
_PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _NoAliasLoader(yaml.SafeLoader):
    """yaml's safe loader without anchors and aliases: a few hundred bytes of nested aliases
    can expand to gigabytes, and a config has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases (*{str(event.anchor)[:40]}) are not allowed in a "
                              f"config; write the values out")
        return super().compose_node(parent, index)


def load_yaml(text: str, where: str) -> Any:
    """Parse untrusted YAML ``text`` safely: no tags that build objects, no aliases, bounded
    size; errors become one :class:`ConfigError` line naming ``where``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is {len(text)} bytes, far too large for a config")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{where} is not valid YAML: {first[:160]}") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise ConfigError(f"{where}: a value is out of range ({str(e)[:100]})") from None


def short_key(key: Any) -> str:
    """A mapping key for an error message: as written when it is a short printable name,
    else a bounded repr (a key may be anything YAML allows, newlines included)."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 60:
        return key
    return short(key)


def short(value: Any, limit: int = 60) -> str:
    """A bounded repr of an untrusted value for an error message (never expands it whole)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, limit, limit
    r.maxlong = limit
    try:
        text = r.repr(value)
    except Exception:  # e.g. an integer too long to print
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            f"unknown key(s) in section {section!r}: "
            f"{', '.join(short_key(k) for k in sorted(unknown, key=str)[:10])}; "
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
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {short(value)}")
        items = [check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{where} = {short(value)} is out of range (at most {MAX_INT})")
        return value
    if hint is float:
        if isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value.strip()):
            value = float(value)  # "1e-4": a number in YAML 1.2 and to users, a string to PyYAML
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {short(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{where} = {short(value)} is out of range") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {number}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {short(value)}")
        return value
    return value
