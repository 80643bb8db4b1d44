"""Latency tables: per-(block, shape) statistics with their provenance, read and written here only.

A table is one JSON file a person can read and share: a `provenance` object (target, device,
host, runtime and versions, threads, protocol, date, space) and one row per line, keyed by
block and shape. Rows are written as they are measured (atomically), so an interrupted
benchmark keeps what it measured.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from blocks.space import LayerShape, SearchSpace
from benchmarks.device import HOST_DEVICE
from core.config import CLASSES, LAYER_INDEX, MAX_MS, SHAPE_SIDE, STRIDES, Input, int_in, number_in, one_of, validate
from core.errors import PipelineError
from core.fileio import read_json, write_text_atomic
from core.workspace import Workspace

TABLE_FORMAT = "pipeline-latency-table"
TABLE_VERSION = 1
STATUSES = ("ok", "unavailable", "failed")
ROW_CHANNELS = (1, CLASSES[1])  # a row's out_ch is the number of classes for the classifier
MAX_STAT = 1e12  # a row statistic's magnitude (counts, ms, ratios): past it a number was mistyped


def row_key(block: str, shape: LayerShape) -> str:
    return f"{block}/{shape.key}"


def measure_command(target: str, space: str, device: str) -> str:
    """The command that measures (or, for a device, bundles) the rows a table lacks."""
    return f"pipeline benchmark --target {target} --space {space}" + ("" if device == HOST_DEVICE else f" --device {device}")


class Incomplete(PipelineError):
    """No table, or one without every row a space needs: measure what is missing."""


@dataclass
class Row:
    block: str
    shape: LayerShape
    status: str = "ok"
    median_ms: float | None = None
    stats: dict[str, float] = field(default_factory=dict)  # p10/p90/iqr/cv/count/...
    reason: str = ""
    layers: list[int] = field(default_factory=list)  # which layers of the space use this row
    # What `median_ms` holds: the median of this tool's samples, or what a source published
    # (a lookup table's mean). Stored as "statistic" with the value under "ms" where not the median.
    statistic: str = "median"

    @property
    def key(self) -> str:
        return row_key(self.block, self.shape)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "block": self.block, **asdict(self.shape), "status": self.status}
        if self.statistic == "median":
            d["median_ms"] = self.median_ms
        else:  # a row's field names what it holds: a published mean is not a median
            d.update(statistic=self.statistic, ms=self.median_ms)
        d.update(self.stats)
        if self.reason:
            d["reason"] = self.reason
        if self.layers:
            d["layers"] = self.layers
        return d

    @classmethod
    def from_input(cls, r: "RowInput", where: str, statistic: str = "median") -> "Row":
        """A checked row; `statistic` is the table's, for rows that do not name their own."""
        shape = LayerShape(r.in_ch, r.out_ch, r.stride, r.height, r.width)
        statistic = r.statistic or statistic
        ms = r.ms if r.ms is not None else r.median_ms
        row = cls(r.block, shape, r.status, ms, dict(r.model_extra or {}), r.reason, list(r.layers), statistic)
        if r.key is not None and r.key != row.key:
            raise PipelineError(f"{where}: row key {r.key!r} does not match its fields ({row.key}); fix the key "
                                "or the fields")
        if row.status == "ok" and ms is None:
            raise PipelineError(f"{where}: row {row.key} is 'ok' but has no latency; give median_ms, or remeasure "
                                "with 'pipeline benchmark --force'")
        return row


def _stat_value(v: Any) -> Any:
    """A row's extra statistic: text, true/false, null, a finite number or a list of finite numbers."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < MAX_STAT and x == x
    if v is None or isinstance(v, (str, bool)) or number(v) or isinstance(v, list) and all(number(x) for x in v):
        return v
    raise PydanticCustomError("stat", "text, a finite number below 1e12 or a list of them")


class RowInput(Input):
    """One row of a table file. Keys beyond these are the row's statistics (p10_ms, count, samples_ms, ...)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Annotated[Any, PlainValidator(_stat_value)]] = Field(init=False)  # type: ignore[assignment]

    key: str | None = None
    block: str
    in_ch: int_in(*ROW_CHANNELS)  # type: ignore[valid-type]
    out_ch: int_in(*ROW_CHANNELS)  # type: ignore[valid-type]
    stride: one_of(*STRIDES)  # type: ignore[valid-type]
    height: int_in(*SHAPE_SIDE)  # type: ignore[valid-type]
    width: int_in(*SHAPE_SIDE)  # type: ignore[valid-type]
    status: Literal[STATUSES] = "ok"  # type: ignore[valid-type]
    median_ms: number_in(0, MAX_MS, "a latency in ms") | None = None  # type: ignore[valid-type]
    statistic: Literal["median", "mean"] | None = None  # where set, the latency is under "ms"
    ms: number_in(0, MAX_MS, "a latency in ms") | None = None  # type: ignore[valid-type]
    reason: str = ""
    layers: list[int_in(*LAYER_INDEX)] = []  # type: ignore[valid-type]


class TableInput(Input):
    """A table file's top level; `format` and `version` are checked before, with their own fixes."""

    model_config = ConfigDict(extra="forbid")
    format: str
    version: int
    provenance: dict[str, Any]
    calibration: dict[str, dict[str, Any]] = {}
    rows: list[RowInput]


TABLE_FIX = "fix it, or remeasure the table with 'pipeline benchmark --force'"


_AT_SCALE = ("p10_ms", "p90_ms", "iqr_ms", "mean_ms")  # a row's summary statistics in ms, beside its median


@dataclass
class LatencyTable:
    provenance: dict[str, Any]
    rows: dict[str, Row] = field(default_factory=dict)
    # Whole-network corrections fitted by 'pipeline validate --fit', keyed by space fingerprint
    # (benchmarks.predict.Calibration reads them).
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Keys of the rows this run re-timed because they contradicted the table
    # (`benchmarks.harness.retime_implausible`); not saved: each such row's `retimed` stat is.
    retimed: list[str] = field(default_factory=list, compare=False)

    @property
    def target(self) -> str:
        return str(self.provenance.get("target"))

    @property
    def device(self) -> str:
        return str(self.provenance.get("device"))

    def add(self, row: Row) -> None:
        self.rows[row.key] = row

    @property
    def reference(self) -> dict[str, Any] | None:
        """The row every other was timed against (`benchmarks.protocol.Reference`), or None."""
        ref = self.provenance.get("reference")
        return ref if isinstance(ref, dict) else None

    def apply_reference(self) -> None:
        """Put rows timed against the reference row on one scale: each row's latency is its ratio
        to the reference times the reference's median over every row of the table (`median_ms`
        in the provenance's `reference`). Rows measured at different moments (or in a resumed run
        on another day) then agree however the machine's speed moved in between."""
        ref, timed = self.reference, [r for r in self.rows.values() if r.status == "ok" and "ratio" in r.stats]
        if ref is None or not timed:
            return
        scale = statistics.median(float(v) for r in timed for v in r.stats["reference_ms"])
        ref["median_ms"] = scale
        for r in timed:
            median = float(r.stats["ratio"]) * scale
            # the row's spread, measured at the reference's speed during its measurement, to this scale
            by = median / r.median_ms if r.median_ms else 1.0
            r.stats.update({k: r.stats[k] * by for k in _AT_SCALE if isinstance(r.stats.get(k), (int, float))})
            r.median_ms = median

    def latency(self, block: str, shape: LayerShape) -> float:
        """The row's median in ms; a missing or unmeasured row is an error naming its key."""
        key = row_key(block, shape)
        row = self.rows.get(key)
        if row is None:
            raise PipelineError(
                f"latency table for {self.target}/{self.device} has no row '{key}'; "
                "run 'pipeline benchmark' for this space, target and device"
            )
        if row.status != "ok":
            raise PipelineError(f"latency table row '{key}' is {row.status} ({row.reason}); drop that block or remeasure")
        return float(row.median_ms)  # type: ignore[arg-type]

    def check_fits(self, space: SearchSpace) -> None:
        """Every (layer, candidate) and fixed part of `space` must have a measured row."""
        missing = [row_key(b, s) for b, s in required_rows(space) if row_key(b, s) not in self.rows]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise Incomplete(
                f"latency table for {self.target}/{self.device} does not fit space '{space.name}': "
                f"no row '{missing[0]}'{more}; run '{measure_command(self.target, space.name, self.device)}' to "
                "measure them"
            )
        for b, s in required_rows(space):
            self.latency(b, s)

    def to_json(self) -> str:
        # One row per line: diffs and eyes both read a table row by row.
        top: dict[str, Any] = {"format": TABLE_FORMAT, "version": TABLE_VERSION, "provenance": self.provenance}
        if self.calibration:
            top["calibration"] = self.calibration
        head = json.dumps(top, indent=2)
        rows = ",\n".join("    " + json.dumps(r.to_dict()) for r in sorted(self.rows.values(), key=_order))
        return head[:-2] + ',\n  "rows": [\n' + rows + "\n  ]\n}\n"

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, self.to_json())


def _order(row: Row) -> tuple:
    return (min(row.layers) if row.layers else -1, row.shape.key, row.block)


def required_rows(space: SearchSpace) -> list[tuple[str, LayerShape]]:
    """Unique (block, shape) pairs the space needs: identical shapes appear once."""
    seen: dict[str, tuple[str, LayerShape]] = {}
    for name, shape in space.fixed_parts():
        seen.setdefault(row_key(name, shape), (name, shape))
    for i, shape in enumerate(space.layers):
        for name in space.candidates(i):
            seen.setdefault(row_key(name, shape), (name, shape))
    return list(seen.values())


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read and validate a table file; anything malformed is a one-line error naming the fix."""
    data = read_json(path, "latency table")
    where = f"latency table '{path}'"
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise PipelineError(f"{where} is not a latency table of this tool; import it with 'pipeline benchmark import'")
    if data.get("version") != TABLE_VERSION:
        raise PipelineError(
            f"{where} has table format version {data.get('version')}; this tool reads version {TABLE_VERSION}: "
            "remeasure it with 'pipeline benchmark --force'"
        )
    checked = validate(TableInput, data, where, TABLE_FIX)
    table = LatencyTable(checked.provenance, calibration=checked.calibration)
    statistic = "mean" if checked.provenance.get("statistic") == "mean" else "median"  # tables from before rows named it
    for i, r in enumerate(checked.rows):
        row = Row.from_input(r, f"{where}: rows.{i}", statistic)
        if row.key in table.rows:
            raise PipelineError(f"{where}: row '{row.key}' appears twice; keep one")
        table.add(row)
    _check_agrees_with_provenance(table, where)
    return table


def _close(a: float, b: float) -> bool:
    """Equal but for the rounding of stored samples (to 1 ns); anything further off was edited."""
    return abs(a - b) <= 2e-6 + 1e-3 * abs(b)


def _numbers(values: Any) -> list[float] | None:
    try:
        return [float(v) for v in values] if isinstance(values, list) and values else None
    except (TypeError, ValueError):
        return None


def _disagreement(row: Row, reference: dict[str, Any] | None) -> str | None:
    """Why an 'ok' row cannot have been measured as the provenance says, or None."""
    # A row's count is not compared with the protocol's repeats: a resumed benchmark keeps the
    # rows it finds, whatever --repeats measured them.
    s = row.stats
    count = s.get("count")
    samples = _numbers(s.get("samples_ms"))
    if "samples_ms" in s and samples is None:
        return "raw samples that are not numbers"
    if samples is None or row.median_ms is None:
        return None
    if isinstance(count, int) and len(samples) != count:
        return f"{len(samples)} raw samples for a count of {count}"
    if "ratio" not in s:
        med = statistics.median(samples)
        return None if _close(med, row.median_ms) else \
            f"median {row.median_ms:.6g} ms, but its own raw samples' median is {med:.6g} ms"
    ref = _numbers(s.get("reference_ms"))
    stored = _numbers([s["ratio"], (reference or {}).get("median_ms") or 0])
    if stored is None:
        return f"a ratio to the reference row ({s['ratio']!r}) or a reference median that is not a number"
    if reference is None or ref is None or len(ref) != len(samples) or min(ref) <= 0:
        return "a ratio to a reference row, but no reference row or its samples"
    (stored_ratio, scale), ratio = stored, statistics.median(a / b for a, b in zip(samples, ref))
    if not _close(ratio, stored_ratio):
        return f"ratio {stored_ratio:.6g} to the reference, but its own samples give {ratio:.6g}"
    if not _close(stored_ratio * scale, row.median_ms):
        return f"median {row.median_ms:.6g} ms, but its ratio times the reference's median is not that"
    return None


def _check_agrees_with_provenance(table: LatencyTable, where: str) -> None:
    """A table whose rows contradict its own provenance was edited or mixed up: refuse it."""
    prov = table.provenance
    protocol = prov.get("protocol")
    if isinstance(protocol, dict) and "threads" in prov and protocol.get("threads", prov["threads"]) != prov["threads"]:
        raise PipelineError(f"{where}: provenance says {prov['threads']} threads but its protocol {protocol['threads']}; "
                            "the file was edited: remeasure it with 'pipeline benchmark --force'")
    # The reference's median is not checked against the rows' reference times: a row deleted by
    # hand (to remeasure it) changes that median; every row must still agree with the stored one.
    ref = table.reference
    for row in table.rows.values():
        why = _disagreement(row, ref) if row.status == "ok" else None
        if why:
            raise PipelineError(f"{where}: row '{row.key}' disagrees with the table's own provenance ({why}); "
                                "the file was edited or mixed up: remeasure it with 'pipeline benchmark --force'")


def expect_table_for(table: LatencyTable, target: str, device: str, path: Path | str) -> None:
    if table.target != target or table.device != device:
        raise PipelineError(
            f"latency table '{path}' was measured for {table.target}/{table.device}, not {target}/{device}; "
            f"pass --target {table.target} --device {table.device} or the table for {target}/{device}"
        )


def find_table(space: SearchSpace, target: str, ws: Workspace, device: str,
               table_path: Path | None, not_here: str | None = None) -> tuple[LatencyTable, Path]:
    """The table for `space` on `target`/`device`, checked. `Incomplete` where there is none or
    it lacks rows the space needs; another `PipelineError` where it is damaged or another's.
    `not_here`: why the target's runtime cannot time on this machine (the message then says
    what can work here instead of benchmarking here)."""
    path = table_path or ws.table(space.name, target, device)
    if table_path is None and not path.exists():
        bench = f"pipeline benchmark --target {target} --space {space.name}"
        if device == HOST_DEVICE and not_here is not None:
            how = (f"{target} cannot be timed on this machine ({not_here.split(':')[0]}); time it through an agent on "
                   f"a machine that can ('{bench} --device NAME --remote URL --token-file F', then the same command "
                   f"with --device NAME), or bring in a table measured there ('pipeline benchmark import FILE --target "
                   f"{target} --space {space.name} --device NAME')")
        elif device == HOST_DEVICE:
            how = f"run '{bench}' first"
        else:
            how = (f"time it on that device through an agent there ('{bench} --device {device} --remote URL "
                   f"--token-file F'), or as a bundle ('{bench} --device {device}' writes its blocks to time there), or "
                   f"bring in a table measured there with 'pipeline benchmark import FILE ... --device {device}'")
        raise Incomplete(f"no latency table for space '{space.name}' on {target}/{device} at '{path}'; {how}")
    table = load_table(path)
    expect_table_for(table, target, device, path)
    table.check_fits(space)
    return table, path

