"""Typed input: pydantic models for what users write, and the one-line error for a bad value.

Every file or flag a user writes (space, target, table, imported table, bundle results, `-o`
values, option and search configs) is checked by a pydantic model through `validate`, so a
bad value anywhere reads the same: `<where>: <field> = <given>: expected <what is valid>; <fix>`.
Unknown keys and wrong types are errors (a string where a number goes is one), so a typo in a
config file is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import types
import typing
from typing import Annotated, Any, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, WithJsonSchema, create_model, model_validator
from pydantic_core import PydanticCustomError

from core.errors import PipelineError

C = TypeVar("C")
M = TypeVar("M", bound=BaseModel)

# Bounds on what input may ask for, in one place. Each is far beyond any network a phone or a
# desktop runs, and far enough below what exhausts this machine that a typo (an extra zero) is
# refused before anything is allocated: 1024x1024 at 4096 channels is already 16 GiB of fp32
# activations, and a latency of a million ms (17 minutes for one block) is a unit mistake.
RESOLUTION = (8, 1024)  # input height and width, pixels
CHANNELS = (1, 4096)  # a layer's width
IMAGE_CHANNELS = (1, 64)  # the input image's channels
CLASSES = (1, 100_000)  # classifier outputs
LAYERS = (1, 64)  # layers in one stage
STAGES = (1, 64)  # stages in one space
STRIDES = (1, 2)  # every conv here keeps or halves the size
SHAPE_SIDE = (1, 4096)  # a table row's feature-map height or width (after strides and padding)
LAYER_INDEX = (0, 4096)  # a table row's `layers`: indices into a space's layers
# one feature map (channels x height x width): 2**26 fp32 values are 256 MiB, and a block
# holds several such maps (an MBConv's expansion, six times as many)
MAX_ACTIVATION = 2**26
MAX_MS = 1e6  # a latency, exclusive
MAX_COUNT = 10**9  # samples behind one statistic
MAX_TOLERANCE = 1e3  # atol/rtol of an export check


def _bounded_repr(limit: int) -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxset, r.maxdict = 4, 8, 8, 8, 8
    r.maxstring = r.maxlong = r.maxother = limit
    return r


def short(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters: a message stays one readable line. Only the first
    items and levels are looked at: a YAML alias bomb (nine aliases of nine aliases ...) is
    small in memory, but its whole repr takes minutes."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    try:
        text = _bounded_repr(limit).repr(value)
    except (ValueError, RecursionError):  # ints past Python's digit limit inside containers, deep nesting
        text = f"<a {type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- bounded scalar types
def _fail(kind: str, valid: str) -> PydanticCustomError:
    return PydanticCustomError(kind, valid)


def int_in(lo: int, hi: int, what: str = "an integer") -> Any:
    """An int (not a bool, not a string, not a float) from `lo` to `hi` inclusive."""
    valid = f"{what} from {lo} to {hi}"

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _fail("int_in", valid)
        return v

    return Annotated[int, PlainValidator(check), WithJsonSchema({"type": "integer", "minimum": lo, "maximum": hi})]


def one_of(*values: int) -> Any:
    """An int that is one of `values` (a stride)."""
    valid = " or ".join(str(v) for v in values)

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v not in values:
            raise _fail("one_of", valid)
        return v

    return Annotated[int, PlainValidator(check), WithJsonSchema({"enum": list(values)})]


def _num(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) and abs(x) < 1e15 else f"{x:g}"


_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def option_value(v: Any) -> str | int | float | bool:
    """One exporter or runner option: text, a number or true/false (options are scalars)."""
    ok = (isinstance(v, (str, bool)) and len(str(v)) <= 1000 or isinstance(v, int) and v.bit_length() <= 63
          or isinstance(v, float) and math.isfinite(v))
    if not ok:
        raise _fail("option_value", "text, a finite number or true/false")
    return v


OptionValue = Annotated[Any, PlainValidator(option_value)]


def number_in(lo: float, hi: float, what: str = "a number", lo_open: bool = False) -> Any:
    """A finite int or float with lo <= v < hi (lo < v < hi with `lo_open`), returned as float."""
    valid = f"{what} {'above' if lo_open else 'from'} {_num(lo)} {'and below' if lo_open else 'to below'} {_num(hi)}"

    def check(v: Any) -> float:
        if isinstance(v, str) and _EXPONENT.fullmatch(v.strip()):
            # PyYAML reads `1e-3` (no decimal point) as text: say so, since the file looks right
            raise _fail("number_in", f"{valid}, not text (YAML reads an exponent as a number only when written "
                                     "like 1.0e-3, with a point and a sign)")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail("number_in", valid)
        try:
            f = float(v)
        except OverflowError:
            raise _fail("number_in", valid) from None
        if not (math.isfinite(f) and (lo < f if lo_open else lo <= f) and f < hi):
            raise _fail("number_in", valid)
        return f

    return Annotated[float, PlainValidator(check), WithJsonSchema({"type": "number", "minimum": lo, "maximum": hi})]


# ---------------------------------------------------------------------------- models and the one-line error
class Input(BaseModel):
    """Base of every input model: unknown keys, wrong types and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, hide_input_in_errors=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's own extra_forbidden error does not say which keys are valid; this one does
        if isinstance(data, dict) and cls.model_config.get("extra") == "forbid":
            valid = {f.alias or name for name, f in cls.model_fields.items()}
            unknown = [k for k in data if k not in valid]
            if unknown:
                raise PydanticCustomError("unknown_key", "valid keys: {valid}",
                                          {"key": short(unknown[0]), "valid": ", ".join(sorted(valid))})
        return data


_VALID = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "string_type": "text", "bool_type": "true or false", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)", "dataclass_type": "a mapping (key: value)",
    "none_required": "nothing (null)", "is_instance_of": "an object of the right kind",
}


def _valid(err: Mapping[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind in _VALID:
        return _VALID[kind]
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return f"text matching {ctx.get('pattern')}"
    if kind == "string_too_long":
        return f"text of at most {ctx.get('max_length')} characters"
    msg = str(err.get("msg") or kind)
    return msg.removeprefix("Input should be ")


def describe(err: Mapping[str, Any], where: str, fix: str) -> str:
    """One pydantic error as the one line users see."""
    loc = [str(p) for p in err.get("loc", ())]
    if err["type"] == "unknown_key":
        inside = f" in {'.'.join(loc)}" if loc else ""
        return f"{where}: unknown key {err['ctx']['key']}{inside}; {_valid(err)}; remove it or correct its spelling"
    named = f"{where}: {'.'.join(loc)}" if loc else where
    if err["type"] == "missing":
        return f"{named} is missing: it is required; {fix}"
    return f"{named} = {short(err.get('input'))}: expected {_valid(err)}; {fix}"


def validate(model: type[M], data: Any, where: str, fix: str) -> M:
    """`model` built from `data`, or a one-line PipelineError naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise PipelineError(describe(e.errors(include_url=False)[0], where, fix)) from None
    except RecursionError:
        raise PipelineError(f"{where}: nested too deeply to be a config; {fix}") from None


# ---------------------------------------------------------------------------- dataclass configs
INT64 = int_in(-(2**63), 2**63 - 1)


def _int64(hint: Any) -> Any:
    """`hint` with a plain `int` (alone or in `int | None`) as a 64-bit one: a config's integer past
    that is a typo, and float arithmetic on it (a share of the epochs) overflows."""
    if hint is int:
        return INT64
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and int in typing.get_args(hint):
        return typing.Union[tuple(INT64 if a is int else a for a in typing.get_args(hint))]
    return hint


@functools.cache
def _model_of(cls: type) -> type[BaseModel]:
    """A pydantic model with the init fields of dataclass `cls` (their hints, ints as 64-bit ones,
    and defaults)."""
    hints = {k: _int64(h) for k, h in typing.get_type_hints(cls).items()}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], f.default)
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], None)  # never used: only given keys reach the dataclass
        else:
            fields[f.name] = (hints[f.name], ...)
    return create_model(f"{cls.__name__}Input", __base__=Input, **fields)


def _tuples(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """Lists (what YAML and JSON give) become tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls)
    return {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints.get(k)) is tuple else v
            for k, v in data.items()}


def build_config(cls: type[C], data: Mapping[str, Any], what: str,
                 fix: str = "fix the value or leave it out for the default") -> C:
    """Build dataclass `cls` from `data`, rejecting unknown keys, wrong types and non-finite numbers."""
    model = _model_of(cls)
    checked = validate(model, _tuples(data, cls), what, fix)
    values = {k: getattr(checked, k) for k in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"{what}: {e}") from None


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags override the file: only overrides that were actually given (not None) apply."""
    out = dict(base)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
