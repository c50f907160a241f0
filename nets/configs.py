"""The one `--set` grammar: typed, frozen-dataclass configs from dicts and from dotted `key.path=value` strings.

Every config in gafu (model configs such as StyleGAN2Config, the training run config and the families' recipe
sections) is a frozen dataclass of scalars and nested dataclasses. This module reads them from JSON-like dicts
and applies overrides to them, checking every value against the field's type hint:

    apply_overrides(cfg, ["loss.r1_gamma=2", "model.resolution=64", "ema.rampup=null"])

Values are parsed as JSON when possible (1e-3, true, null, "x"), else `none`/`true`/`false` in any case, else
taken as the bare string; ints are accepted for float fields. Non-finite numbers are refused.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Sequence
from typing import Any


def parse_value(raw: str) -> Any:
    """'1e-3' -> 0.001, 'true' -> True, 'null' / 'none' -> None, '"x"' -> 'x', 'abc' -> 'abc'."""
    raw = raw.strip()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"none": None, "true": True, "false": False}.get(raw.lower(), raw)


def split_assignment(item: str) -> tuple[list[str], str]:
    """'a.b=1' -> (['a', 'b'], '1'), or a ValueError naming the malformed item."""
    key, sep, raw = item.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(parts):
        raise ValueError(f"override {item!r} is not of the form key.path=value")
    return parts, raw.strip()


def field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field type (bool, int, float, str, X | None); ints are accepted as floats."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"config key {where!r}: bad value {value!r}")
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}
    if hint in ok:
        if not ok[hint](value):
            raise ValueError(f"config key {where!r} expects {hint.__name__}; got {value!r}")
        if hint is float and not math.isfinite(value):
            raise ValueError(f"config key {where!r} must be a finite number; got {value!r}")
        return float(value) if hint is float else value
    raise ValueError(f"config key {where!r} has unsupported type {hint}")


def set_path(obj: Any, parts: Sequence[str], value: Any, full: str) -> Any:
    """A copy of the frozen dataclass `obj` with the field at `parts` set to `value` (checked and coerced)."""
    fields = {f.name for f in dataclasses.fields(obj)}
    name = parts[0]
    if name not in fields:
        raise ValueError(f"unknown config key {full!r}: {type(obj).__name__} has no field {name!r} "
                         f"(fields: {', '.join(sorted(fields))})")
    cur = getattr(obj, name)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(cur):
            raise ValueError(f"config key {full!r}: {name!r} is a {type(cur).__name__}, not a section")
        return dataclasses.replace(obj, **{name: set_path(cur, parts[1:], value, full)})
    hint = field_hints(type(obj))[name]
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"config key {full!r} is a section; set its fields, e.g. {full}.<field>=...")
    return dataclasses.replace(obj, **{name: coerce(value, hint, full)})


def apply_overrides(obj: Any, items: Sequence[str]) -> Any:
    """Apply 'a.b=value' strings to a frozen dataclass, in order."""
    for item in items:
        parts, raw = split_assignment(item)
        obj = set_path(obj, parts, parse_value(raw), ".".join(parts))
    return obj


def from_dict(cls: type, d: Any, prefix: str = "") -> Any:
    """A `cls` instance from a nested dict (e.g. a JSON file), every value checked; unknown keys are errors.
    Missing keys take the field defaults."""
    if not isinstance(d, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping; "
                         f"got {type(d).__name__}")
    hints = field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config keys {[prefix + k for k in unknown]} in {cls.__name__}")
    kw = {k: from_dict(hints[k], v, f"{prefix}{k}.") if dataclasses.is_dataclass(hints[k])
          else coerce(v, hints[k], prefix + k) for k, v in d.items()}
    return cls(**kw)
