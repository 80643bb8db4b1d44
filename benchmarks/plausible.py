"""Rows that contradict the table they sit in (docs/measurement.md, "Rows that contradict the table").

Two rules, both within one layer shape (every row of a shape sees the same input):

- a contradiction: a block more than `CONTRADICTION_TOLERANCE` slower than a strictly larger
  block, where "strictly larger" is read from the blocks' own `config`: the same config but a
  higher expansion, or the same config but a larger kernel. Blocks whose configs differ in
  anything else (groups, squeeze-excite, activation) are not compared: a grouped convolution
  being slower than an ungrouped one with more multiply-adds is real on XNNPACK.
- off the trend: a row more than `TREND_FACTOR` times above or below the trend of time against
  multiply-adds that the shape's other rows draw (a robust straight line in log-log).

A block without `kernel` and `expansion` in its config is never compared, and a row without
multiply-adds (an identity) is not on any trend; neither is ever implausible.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.table import LatencyTable, Row
from blocks.space import LayerShape, build_part
from core.errors import PipelineError

# A smaller block is a contradiction only when this much slower than the larger one. A row's
# spread over repeated desktop tables is ~5% (median, docs/measurement.md), so two honest rows
# can land ~10% apart in the wrong order; on four tables timed on a lightly loaded machine or
# on a phone (459 comparable pairs) no smaller block was more than 1.05x the larger one.
CONTRADICTION_TOLERANCE = 0.25
# A row is off its shape's trend when this many times above or below it: on the same four
# tables the farthest row (a grouped block, slower per multiply-add) sat 1.72x off.
TREND_FACTOR = 3.0
# The trend needs this many other rows with multiply-adds at the shape.
MIN_TREND_ROWS = 4
# What a kernel/expansion comparison ignores of a config: the sizes it compares.
_SIZES = ("kernel", "expansion")


@dataclass(frozen=True)
class Implausible:
    """Why row `key` contradicts its table, and the rows it contradicts (to re-time beside it)."""

    key: str
    reason: str
    partners: tuple[str, ...] = ()


@functools.lru_cache(maxsize=4096)
def _sized(block: str, shape: LayerShape) -> tuple[dict[str, Any] | None, int]:
    """(the block's config, its multiply-adds at `shape`), built on the meta device: no memory,
    no arithmetic. A row that is not a registered block or part (a no-op row) is (None, 0)."""
    try:
        with torch.device("meta"):
            module = build_part(block, shape).eval()
            x = torch.zeros(1, shape.in_ch, shape.height, shape.width)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(x)
    except PipelineError:
        return None, 0
    config = getattr(module, "config", None)
    return (dict(config) if isinstance(config, dict) else None), counter.get_total_flops() // 2


def block_config(block: str, shape: LayerShape) -> dict[str, Any] | None:
    """The block's own typed config (`FBNetBlock.config`, ...), or None where it has none."""
    return _sized(block, shape)[0]


def multiply_adds(block: str, shape: LayerShape) -> int:
    """Multiply-adds of one row's module on its input (convolutions and linear layers)."""
    return _sized(block, shape)[1]


def strictly_larger(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether config `b` is config `a` with a higher expansion, or with a larger kernel."""
    if a is None or b is None or not all(isinstance(c.get(k), int) for c in (a, b) for k in _SIZES):
        return False
    if {k: v for k, v in a.items() if k not in _SIZES} != {k: v for k, v in b.items() if k not in _SIZES}:
        return False
    return (a["kernel"] == b["kernel"] and b["expansion"] > a["expansion"]) or \
        (a["expansion"] == b["expansion"] and b["kernel"] > a["kernel"])


def _by_shape(table: LatencyTable) -> dict[LayerShape, list[Row]]:
    shapes: dict[LayerShape, list[Row]] = {}
    for row in table.rows.values():
        if row.status == "ok" and row.median_ms:
            shapes.setdefault(row.shape, []).append(row)
    return shapes


def contradictions(table: LatencyTable) -> list[Implausible]:
    """Each row more than `CONTRADICTION_TOLERANCE` slower than a strictly larger block of its shape."""
    found = []
    for shape, rows in _by_shape(table).items():
        for small, big in itertools.permutations(rows, 2):
            if small.median_ms > big.median_ms * (1 + CONTRADICTION_TOLERANCE) and \
                    strictly_larger(block_config(small.block, shape), block_config(big.block, shape)):
                found.append(Implausible(small.key, f"{small.median_ms / big.median_ms:.2f}x slower than the larger "
                                                    f"{big.block}", (big.key,)))
    return found


def _trend_ratio(x: float, y: float, others: list[tuple[float, float]]) -> float | None:
    """exp(y − trend(x)) for the Theil–Sen line through `others` (log multiply-adds, log ms): a
    line no single wild row among them can drag."""
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in itertools.combinations(others, 2) if x2 != x1]
    if len(others) < MIN_TREND_ROWS or not slopes:
        return None
    slope = float(np.median(slopes))
    intercept = float(np.median([yo - slope * xo for xo, yo in others]))
    return math.exp(y - (intercept + slope * x))


def off_trend(table: LatencyTable) -> list[Implausible]:
    """Each row more than `TREND_FACTOR` times off its shape's trend of time against multiply-adds."""
    found = []
    for shape, rows in _by_shape(table).items():
        points = {r.key: (math.log(m), math.log(r.median_ms)) for r in rows if (m := multiply_adds(r.block, shape)) > 0}
        for key, (x, y) in points.items():
            ratio = _trend_ratio(x, y, [p for k, p in points.items() if k != key])
            if ratio is not None and not 1 / TREND_FACTOR <= ratio <= TREND_FACTOR:
                found.append(Implausible(key, f"{ratio:.2f}x its shape's trend of time against multiply-adds"))
    return found


def implausible_rows(table: LatencyTable) -> dict[str, Implausible]:
    """Every implausible row of `table` by key (a contradiction first, where a row is both)."""
    found: dict[str, Implausible] = {}
    for item in contradictions(table) + off_trend(table):
        if item.key in found:
            first = found[item.key]
            found[item.key] = Implausible(item.key, first.reason, tuple(dict.fromkeys(first.partners + item.partners)))
        else:
            found[item.key] = item
    return found
