"""Frozen dataclass configs built from a mapping (a YAML/TOML file plus CLI overrides).

Unknown keys and wrong types are errors that name the key, so a typo in a config file is
never silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from core.errors import PipelineError

C = TypeVar("C")


def _check_type(value: Any, annotation: Any) -> Any:
    """Coerce ints to floats where a float is expected; otherwise require the declared type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise TypeError
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return tuple(_check_type(v, item) for v in value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise TypeError
    if annotation is int and isinstance(value, bool):
        raise TypeError
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise TypeError
    return value


def build_config(cls: type[C], data: Mapping[str, Any], what: str) -> C:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise PipelineError(
            f"{what}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    values = {}
    for key, value in data.items():
        try:
            values[key] = _check_type(value, hints[key])
        except TypeError:
            raise PipelineError(
                f"{what}: '{key}' = {value!r} has the wrong type; expected {hints[key]}"
            ) from None
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"{what}: {e}") from None


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags override the file: only overrides that were actually given (not None) apply."""
    out = dict(base)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
