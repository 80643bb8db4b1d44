"""Latency tables: per-(block, shape) statistics with their provenance, read and written here only.

A table is one JSON file a person can read and share: a `provenance` object (target, device,
host, runtime and versions, threads, protocol, date, space) and one row per line, keyed by
block and shape. Rows are written as they are measured (atomically), so an interrupted
benchmark keeps what it measured.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blocks.space import LayerShape, SearchSpace
from benchmarks.device import HOST_DEVICE
from core.errors import PipelineError
from core.fileio import read_json, write_text_atomic
from core.workspace import Workspace

TABLE_FORMAT = "pipeline-latency-table"
TABLE_VERSION = 1
STATUSES = ("ok", "unavailable", "failed")


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

    @property
    def key(self) -> str:
        return row_key(self.block, self.shape)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "block": self.block, **asdict(self.shape)}
        d.update(status=self.status, median_ms=self.median_ms, **self.stats)
        if self.reason:
            d["reason"] = self.reason
        if self.layers:
            d["layers"] = self.layers
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "Row":
        try:
            shape = LayerShape(*(int(d[k]) for k in ("in_ch", "out_ch", "stride", "height", "width")))
            row = cls(str(d["block"]), shape, str(d.get("status", "ok")))
        except (KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"{where}: row {d.get('key', d)!r} is malformed ({e}); fix or remeasure it") from None
        known = {"key", "block", "in_ch", "out_ch", "stride", "height", "width", "status", "median_ms", "reason", "layers"}
        row.stats = {k: v for k, v in d.items() if k not in known}
        row.reason, row.layers = str(d.get("reason", "")), list(d.get("layers", []))
        row.median_ms = d.get("median_ms")
        if row.status not in STATUSES:
            raise PipelineError(f"{where}: row {row.key} has status '{row.status}'; valid: {', '.join(STATUSES)}")
        if d.get("key", row.key) != row.key:
            raise PipelineError(f"{where}: row key {d['key']!r} does not match its fields ({row.key})")
        if row.status == "ok":
            m = row.median_ms
            if not isinstance(m, (int, float)) or isinstance(m, bool) or not math.isfinite(m) or m < 0:
                raise PipelineError(
                    f"{where}: row {row.key} has latency {m!r}; latencies must be finite and >= 0 ms "
                    "(remeasure with 'pipeline benchmark --force')"
                )
        return row


_AT_SCALE = ("p10_ms", "p90_ms", "iqr_ms", "mean_ms")  # a row's summary statistics in ms, beside its median


@dataclass
class LatencyTable:
    provenance: dict[str, Any]
    rows: dict[str, Row] = field(default_factory=dict)
    # Whole-network corrections fitted by 'pipeline validate --fit', keyed by space fingerprint
    # (benchmarks.predict.Calibration reads them).
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    if not isinstance(data.get("provenance"), dict) or not isinstance(data.get("rows"), list):
        raise PipelineError(f"{where} lacks 'provenance' or 'rows'; it is damaged: remeasure it")
    calibration = data.get("calibration", {})
    if not isinstance(calibration, dict):
        raise PipelineError(f"{where}: 'calibration' is not an object; the file is damaged: refit with 'pipeline validate --fit'")
    table = LatencyTable(data["provenance"], calibration=calibration)
    for d in data["rows"]:
        if not isinstance(d, dict):
            raise PipelineError(f"{where}: a row is not an object; the file is damaged")
        row = Row.from_dict(d, where)
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
    # A row's count is not compared with the protocol's repeats: rows measured by an
    # earlier run with other --repeats are kept when the benchmark is run again.
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
               table_path: Path | None) -> tuple[LatencyTable, Path]:
    """The table for `space` on `target`/`device`, checked. `Incomplete` where there is none or
    it lacks rows the space needs; another `PipelineError` where it is damaged or another's."""
    path = table_path or ws.table(space.name, target, device)
    if table_path is None and not path.exists():
        how = (f"run 'pipeline benchmark --target {target} --space {space.name}' first" if device == HOST_DEVICE
               else f"time it on that device ('pipeline benchmark --target {target} --space {space.name} "
                    f"--device {device}' writes its blocks to a bundle to time there) or bring in a table measured "
                    f"there with 'pipeline benchmark import FILE ... --device {device}'")
        raise Incomplete(f"no latency table for space '{space.name}' on {target}/{device} at '{path}'; {how}")
    table = load_table(path)
    expect_table_for(table, target, device, path)
    table.check_fits(space)
    return table, path

