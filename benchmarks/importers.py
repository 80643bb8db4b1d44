"""Importing latency tables measured elsewhere, bound to a target, a device and a space.

Two formats are read, told apart by their content:

- this tool's own table JSON (`benchmarks.table`), measured on another machine or for another
  device name, re-bound to the given target/device/space;
- the per-block lookup tables ProxylessNAS and Once-for-All published for phones (YAML, keys
  such as `expanded_conv-input:56x56x24-output:28x28x40-expand:3-kernel:5-stride:2-idskip:0`,
  values `{mean, count, var|std}` in ms), mapped to this tool's block names and shapes.

Whatever is imported must fit the space exactly: every row the space needs is present, and
every row the file holds is a (layer shape, block) or fixed part of the space. Rows at a
layer shape of the space for a block the space does not search there (ProxylessNAS times
k5/k7 for its fixed first block) are left out and listed in the provenance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Hashable
from typing import Annotated, Any

import yaml
from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

from benchmarks.table import TABLE_FORMAT, LatencyTable, Row, load_table, required_rows, row_key
from blocks.mbconv import mb_name
from blocks.space import FIXED_PARTS, LayerShape, SearchSpace
from core.config import CLASSES, MAX_COUNT, MAX_MS, STRIDES, Input, int_in, number_in, one_of, short, validate
from core.errors import PipelineError
from core.fileio import read_text

log = logging.getLogger(__name__)

ACCEPTED = (
    f"this tool's latency table (JSON with \"format\": \"{TABLE_FORMAT}\") or a ProxylessNAS/Once-for-All "
    "lookup table (YAML with keys like 'expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-stride:S-idskip:0')"
)
UNIT = "ms"
SKIP_NOTE = "skipped layer: the source has no key for it, it takes no time"

# Fixed-part keys and the part of the space they time. AvgPool2D is not a part here: the
# global pooling belongs to the part after it (feature_mix, else the classifier), so its time
# is folded into that part's row (ProxylessNAS's own Logits rows already include it).
PART_OF_KIND = {"Conv": "stem", "Conv_1": "head_conv", "Conv_2": "feature_mix", "Logits": "classifier"}
KINDS = ("expanded_conv", *PART_OF_KIND, "AvgPool2D")
SIZE = (1, CLASSES[1])  # a key's sizes: the classifier's output is the number of classes
EXPAND_MAX = 2**16  # Once-for-All keys give the middle channels, not the ratio
KERNEL_MAX = 15
_LUT_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*-input:")


def import_table(path: str | Path, target: str, device: str, space: SearchSpace, source_note: str = "") -> LatencyTable:
    """Read a table measured elsewhere and bind it to `target`/`device`/`space`.

    The result fits `space` exactly (`check_fits` passes); anything that does not fit, or is
    malformed, is a one-line PipelineError naming the first offending row and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"table to import '{path}' does not exist; check the path")
    data = read_source(path)
    if data is None:
        table = _from_own_table(path, space)
    else:
        table = _from_lookup_table(path, data, space)
    table.provenance.update(_binding(path, target, device, space, source_note))
    table.check_fits(space)
    return table


# ---------------------------------------------------------------------------- format detection
class DuplicateKey(yaml.YAMLError):
    """A mapping key given twice: YAML itself would keep the last silently."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a mapping key given twice (plain safe_load keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # a list key is filled in only when deep
            if not isinstance(key, Hashable):  # `? [1, 2]`: a list as a key
                raise DuplicateKey(f"key {short(key)} (line {key_node.start_mark.line + 1}) is not text; keys look "
                                   "like 'expanded_conv-input:HxWxC-...': fix or remove it")
            if key in seen:
                raise DuplicateKey(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_source(path: Path) -> dict[str, Any] | None:
    """None for this tool's own table; the mapping of a lookup table; anything else an error."""
    text = read_text(path, "table to import")
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("format") == TABLE_FORMAT:
            return None
    except (ValueError, RecursionError):  # not JSON (ValueError: also an integer past Python's digit limit)
        pass
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as e:
        raise PipelineError(f"lookup table '{path}': {e}" + ("; keep one" if "twice" in str(e) else "")) from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PipelineError(f"'{path}' is neither valid JSON nor YAML ({first}); accepted formats: {ACCEPTED}") from None
    if not (isinstance(data, dict) and any(isinstance(k, str) and _LUT_KEY.match(k) for k in data)):
        raise PipelineError(f"'{path}' is not a latency table this tool can import; accepted formats: {ACCEPTED}")
    return data


# ---------------------------------------------------------------------------- own format
def _from_own_table(path: Path, space: SearchSpace) -> LatencyTable:
    src = load_table(path)
    where = f"latency table '{path}'"
    _check_unit(src.provenance.get("unit", UNIT), where)
    rows, left_out = _fit([(r.key, r) for r in src.rows.values()], space, where)
    _refuse_missing(rows, space, where, skip_filled=False)
    provenance = dict(src.provenance)
    provenance.update(
        source=str(src.provenance.get("source", "pipeline benchmark")),
        statistic=src.provenance.get("statistic", "median"),
        measured_as={"target": src.provenance.get("target"), "device": src.provenance.get("device"),
                     "space": src.provenance.get("space")},
    )
    if left_out:
        provenance["left_out"] = left_out
    return LatencyTable(provenance, rows)


# ---------------------------------------------------------------------------- lookup tables
@dataclass
class _Entry:
    """One lookup-table key, mapped to this tool's block (or part) and input shape."""

    key: str
    block: str
    shape: LayerShape
    mean_ms: float
    stats: dict[str, Any]


def _from_lookup_table(path: Path, data: dict[str, Any], space: SearchSpace) -> LatencyTable:
    where = f"lookup table '{path}'"
    _check_unit(data.get("unit", UNIT), where)
    entries = read_entries(data, where)
    rows, left_out = _fit([(e.key, Row(e.block, e.shape, "ok", e.mean_ms, e.stats, statistic="mean"))
                           for e in entries], space, where)
    _refuse_missing(rows, space, where, skip_filled=True)
    # The device is the phone that measured the file, not this machine: no host info.
    provenance = {"source": _source_name(data), "statistic": "mean", "host": None}
    if left_out:
        provenance["left_out"] = left_out
    table = LatencyTable(provenance, rows)
    _add_skip_rows(table, space)
    return table


def read_entries(data: dict[str, Any], where: str) -> list[_Entry]:
    """Every key of a lookup table as this tool's block or part, AvgPool2D folded into its reader."""
    entries, pools = [], []
    for key, value in data.items():
        if key == "unit":
            continue
        key = str(key)
        kind, fields = parse_key(key, where)
        mean, stats = _value_stats(key, value, where)
        if kind == "AvgPool2D":
            pools.append((key, fields, mean, stats))
        elif kind == "expanded_conv":
            entries.append(_Entry(key, *_block_of(key, fields, where), mean, stats))
        else:
            entries.append(_Entry(key, *_part_of(kind, fields, key, where), mean, stats))
    for pool in pools:
        _fold_pool(pool, entries, where)
    return entries


def _dims_value(v: Any) -> list[int]:
    if isinstance(v, list) and len(v) in (1, 3) and all(isinstance(d, int) and 1 <= d <= SIZE[1] for d in v):
        return v
    raise PydanticCustomError("dims", f"HxWxC or N, each from 1 to {SIZE[1]}")


class LutKey(Input):
    """The fields of a lookup-table key (`expanded_conv-input:56x56x24-output:28x28x40-expand:3-...`)."""

    input: Annotated[list[int], PlainValidator(_dims_value)]
    output: Annotated[list[int], PlainValidator(_dims_value)]
    expand: int_in(1, EXPAND_MAX) | None = None  # type: ignore[valid-type]
    kernel: int_in(1, KERNEL_MAX) | None = None  # type: ignore[valid-type]
    stride: one_of(*STRIDES) | None = None  # type: ignore[valid-type]
    idskip: one_of(0, 1) | None = None  # type: ignore[valid-type]
    se: one_of(0, 1) | None = None  # type: ignore[valid-type]
    hs: one_of(0, 1) | None = None  # type: ignore[valid-type]


class LutValue(Input):
    """A lookup table's value for one key: the published statistics of its time."""

    mean: number_in(0, MAX_MS, "a latency in ms")  # type: ignore[valid-type]
    count: int_in(0, MAX_COUNT) | None = None  # type: ignore[valid-type]
    std: number_in(0, MAX_MS, "a deviation in ms") | None = None  # type: ignore[valid-type]
    var: number_in(0, MAX_MS**2, "a variance in ms²") | None = None  # type: ignore[valid-type]
    unit: str | None = None


KEY_FIX = "fix the key or remove its row"


def parse_key(key: str, where: str) -> tuple[str, LutKey]:
    """`Kind-name:value-name:value...` -> (Kind, its checked fields)."""
    kind, *parts = key.split("-")
    if kind not in KINDS:
        raise PipelineError(
            f"{where}: key '{key}' is of unknown kind '{kind}'; known kinds: {', '.join(KINDS)}. "
            "Remove the row or convert it to one of these"
        )
    fields: dict[str, Any] = {}
    for part in parts:
        name, sep, value = part.partition(":")
        if not sep or not value or name in fields:
            raise PipelineError(f"{where}: key '{key}' is malformed at '{part}'; fields are name:value joined by '-'")
        fields[name] = _key_number(name, value, key, where)
    need = ("input", "output") + (("expand", "kernel", "stride", "idskip") if kind == "expanded_conv" else ())
    missing = [n for n in need if n not in fields]
    if missing:
        raise PipelineError(f"{where}: key '{key}' lacks field '{missing[0]}'; a {kind} key needs {', '.join(need)}")
    return kind, validate(LutKey, fields, f"{where}: key '{key}'", KEY_FIX)


def _key_number(name: str, value: str, key: str, where: str) -> int | list[int] | str:
    """A key field's integer (a size `HxWxC` or `N`: a list of them); other text is left for LutKey to refuse."""
    try:
        if name in ("input", "output"):
            return [int(v) for v in value.split("x")]
        return int(value)
    except ValueError:
        if name in ("input", "output"):
            raise PipelineError(f"{where}: key '{key}' has size '{value}'; sizes are HxWxC or N") from None
        raise PipelineError(f"{where}: key '{key}' has {name}:{value}, not an integer") from None


def _hwc(dims: list[int], key: str, where: str) -> tuple[int, int, int]:
    if len(dims) != 3:
        raise PipelineError(f"{where}: key '{key}' has size '{'x'.join(map(str, dims))}' where HxWxC is needed")
    return dims[0], dims[1], dims[2]


def _block_of(key: str, f: LutKey, where: str) -> tuple[str, LayerShape]:
    """An MBConv key -> (block name, input shape). Once-for-All keys (with se/hs) give the middle
    channels as `expand`; ProxylessNAS keys give the expansion ratio."""
    (h, w, cin), out = _hwc(f.input, key, where), _hwc(f.output, key, where)
    k, e, s, idskip = f.kernel, f.expand, f.stride, f.idskip
    assert k is not None and e is not None and s is not None and idskip is not None  # parse_key requires them
    ofa = f.se is not None or f.hs is not None
    if ofa:
        if e % cin:
            raise PipelineError(
                f"{where}: key '{key}' has expand:{e} middle channels, not a multiple of its {cin} inputs"
            )
        e = e // cin
    shape = LayerShape(cin, out[-1], s, h, w)
    if tuple(out[:2]) != shape.out_hw or idskip != int(s == 1 and cin == out[-1]):
        raise PipelineError(
            f"{where}: key '{key}' is inconsistent (stride {s} from {h}x{w} gives {shape.out_hw[0]}x{shape.out_hw[1]}; "
            "a residual exactly when stride is 1 and channels are kept); fix the key"
        )
    return mb_name(k, e, bool(f.se), bool(f.hs)), shape


def _part_of(kind: str, f: LutKey, key: str, where: str) -> tuple[str, LayerShape]:
    """A fixed-part key -> (part name, input shape); the stride is what maps input to output size."""
    (h, w, cin), out = _hwc(f.input, key, where), f.output
    stride = 1 if len(out) == 1 or out[0] == h else 2
    shape = LayerShape(cin, out[-1], stride, h, w)
    if len(out) == 3 and tuple(out[:2]) != shape.out_hw:
        raise PipelineError(f"{where}: key '{key}' maps {h}x{w} to {out[0]}x{out[1]}: neither stride 1 nor 2")
    return PART_OF_KIND[kind], shape


def _fold_pool(pool: tuple[str, LutKey, float, dict[str, Any]], entries: list[_Entry], where: str) -> None:
    """Add AvgPool2D's time to the part that reads its output; that part is keyed at the pool's input."""
    key, fields, mean, stats = pool
    (h, w, c), out = _hwc(fields.input, key, where), _hwc(fields.output, key, where)
    after = [e for e in entries if e.block in ("feature_mix", "classifier")
             and (e.shape.height, e.shape.width, e.shape.in_ch) == (*out[:2], c)]
    if out[:2] != (1, 1) or not after:
        raise PipelineError(
            f"{where}: key '{key}' is a pooling no Conv_2/Logits key reads (1x1x{c}); remove it or add that row"
        )
    e = after[0]
    e.shape = LayerShape(e.shape.in_ch, e.shape.out_ch, e.shape.stride, h, w)
    e.mean_ms += mean
    e.stats = _combined(e.stats, stats) | {"avgpool_ms": mean, "avgpool_key": key}


def _combined(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Statistics of the sum of two independent rows: variances add, the smaller count holds."""
    out = dict(a)
    if "std" in a and "std" in b:
        out["std"] = math.sqrt(a["std"] ** 2 + b["std"] ** 2)
    if "count" in a and "count" in b:
        out["count"] = min(a["count"], b["count"])
    return out


def _value_stats(key: str, value: Any, where: str) -> tuple[float, dict[str, Any]]:
    """`{mean, count, var|std}` -> (mean ms, {count, std}); latencies must be finite and >= 0 ms."""
    v = validate(LutValue, value, f"{where}: row '{key}'",
                 "each value is {mean: MS, count: N, var: MS² or std: MS}; fix it or remove the row")
    if v.unit is not None:
        _check_unit(v.unit, f"{where}: row '{key}'")
    stats: dict[str, Any] = {}
    if v.count is not None:
        stats["count"] = v.count
    if v.std is not None or v.var is not None:
        stats["std"] = v.std if v.std is not None else math.sqrt(v.var)  # type: ignore[arg-type]
    return v.mean, stats


def _source_name(data: dict[str, Any]) -> str:
    ofa = any(isinstance(k, str) and "-se:" in k for k in data)
    return "Once-for-All lookup table" if ofa else "ProxylessNAS lookup table"


def _add_skip_rows(table: LatencyTable, space: SearchSpace) -> None:
    """A skipped layer takes no time and has no key in the published tables: 0 ms rows."""
    for block, shape in required_rows(space):
        if block == "identity" and row_key(block, shape) not in table.rows:
            table.add(Row(block, shape, "ok", 0.0, {"note": SKIP_NOTE}, layers=_layers_of(space, block, shape),
                          statistic="mean"))


# ---------------------------------------------------------------------------- fitting and binding
def _layers_of(space: SearchSpace, block: str, shape: LayerShape) -> list[int]:
    return [i for i, s in enumerate(space.layers) if s == shape and block in space.candidates(i)]


def _fit(rows: list[tuple[str, Row]], space: SearchSpace, where: str) -> tuple[dict[str, Row], list[str]]:
    """The rows `space` needs, keyed by row key, and the source keys left out.

    A row the space has no place for is refused; a block the space does not search at one of
    its layer shapes is left out (and logged): the file simply times more than the space uses.
    """
    needed = {row_key(b, s) for b, s in required_rows(space)}
    kept: dict[str, Row] = {}
    source_of: dict[str, str] = {}
    left_out, foreign = [], []
    for source_key, row in rows:
        if row.key in needed:
            if row.key in kept:
                raise PipelineError(
                    f"{where}: '{source_of[row.key]}' and '{source_key}' are both row '{row.key}'; keep one"
                )
            kept[row.key], source_of[row.key] = row, source_key
            row.layers = _layers_of(space, row.block, row.shape)
        elif row.block not in FIXED_PARTS and row.shape in space.layers:
            left_out.append(source_key)
        else:
            foreign.append(source_key)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise PipelineError(
            f"{where} does not fit space '{space.name}': row '{foreign[0]}'{more} has no place in it; "
            "import it into the space it was measured for (--space NAME or a space file)"
        )
    if left_out:
        log.info("%s: left out %d row(s) for blocks space '%s' does not search at their layers: %s",
                 where, len(left_out), space.name, ", ".join(left_out))
    return kept, left_out


def _refuse_missing(rows: dict[str, Row], space: SearchSpace, where: str, skip_filled: bool) -> None:
    """Name the first row the space needs that the file lacks (skips are filled in for lookup tables)."""
    missing = [row_key(b, s) for b, s in required_rows(space)
               if row_key(b, s) not in rows and not (skip_filled and b == "identity")]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise PipelineError(
            f"{where} lacks row(s) space '{space.name}' needs: '{missing[0]}'{more}; import it into the space "
            f"it was measured for, or drop those blocks from the space"
        )


def _binding(path: Path, target: str, device: str, space: SearchSpace, note: str) -> dict[str, Any]:
    """The provenance keys `pipeline benchmark` writes (target, device, space, ...), plus the source file."""
    binding = {
        "target": target, "device": device, "space": space.name, "space_fingerprint": space.fingerprint,
        "block_set": list(space.blocks), "unit": UNIT,
        "imported_from": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if note:
        binding["source_note"] = note
    return binding


def _check_unit(unit: Any, where: str) -> None:
    if unit != UNIT:
        raise PipelineError(
            f"{where} gives latencies in {unit!r}; only milliseconds ('{UNIT}') are read: convert it first"
        )
