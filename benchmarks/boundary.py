"""What a layer that does nothing costs: the edge cost an identity row misses.

A block timed alone pays what the runtime does at a model's edges: LiteRT's converter puts a
NCHW->NHWC transpose at the input and one back at the output, ExecuTorch's XNNPACK delegate
converts layout where it starts and ends, and every row of a layer pays that. An identity
block (FBNet's `skip` where the shape is kept) exports to an empty graph and pays none of it.
A whole network pays the edge cost once, whatever its blocks, so a calibration's intercept
absorbs it for every layer, except that the plain sum credits each identity layer with having
saved it. Networks with many identities then run slower than predicted: one FBNet network with
6 skips was the worst held-out network on LiteRT and ExecuTorch in seven of eight validate
runs, 7-15% under its measured time.

So wherever a candidate is the identity, benchmark also times that shape as a layer of one and
of two 1x1 depthwise convs with unit weights (`noop_1`, `noop_2`: they compute nothing, but go
through the runtime as a block does). 2·t(noop_1) − t(noop_2) extrapolates to zero convs: the
edge cost alone, which is the identity's latency for prediction (never less than its own row).
On LiteRT that is 0.24 ms against the empty graph's 0.08 ms at 16x112x112, and pricing
identities this way lowers the mean worst held-out error of `android` validate runs from 5.5%
to 4.2% (`perf/calibration_terms.py --edges`; docs/measurement.md).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from benchmarks.table import LatencyTable, row_key
from blocks.space import LayerShape, SearchSpace, build_part

NOOP_PARTS = ("noop_1", "noop_2")


def noop_layer(shape: LayerShape, convs: int) -> nn.Module:
    """`convs` chained 1x1 depthwise convs with unit weights: the identity, computed."""
    layer = nn.Sequential(*[nn.Conv2d(shape.in_ch, shape.in_ch, 1, groups=shape.in_ch, bias=False) for _ in range(convs)])
    for conv in layer:
        nn.init.ones_(conv.weight)
    return layer


def build_noop(name: str, shape: LayerShape) -> nn.Module:
    return noop_layer(shape, NOOP_PARTS.index(name) + 1)


@lru_cache(maxsize=None)
def is_identity(block: str, shape: LayerShape) -> bool:
    """Does `block` at `shape` compute nothing (no weights, output equal to its input)?"""
    module = build_part(block, shape).eval()
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        return False
    x = torch.randn(1, shape.in_ch, shape.height, shape.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = module(x)
    return isinstance(y, torch.Tensor) and y.shape == x.shape and torch.equal(y, x)


def identity_shapes(space: SearchSpace) -> list[LayerShape]:
    """The layer shapes where some candidate is the identity, each once."""
    out: list[LayerShape] = []
    for i, shape in enumerate(space.layers):
        if shape not in out and any(is_identity(b, shape) for b in space.candidates(i)):
            out.append(shape)
    return out


def noop_rows(space: SearchSpace) -> list[tuple[str, LayerShape]]:
    """The extra rows benchmark times for `space`: both no-op layers at every identity shape."""
    return [(name, shape) for shape in identity_shapes(space) for name in NOOP_PARTS]


def edge_ms(noop_1_ms: float, noop_2_ms: float) -> float:
    """The cost of a layer with zero convs, extrapolated from layers of one and two."""
    return 2.0 * noop_1_ms - noop_2_ms


def layer_latency(table: LatencyTable, block: str, shape: LayerShape) -> float:
    """`block`'s latency at `shape` for predicting a whole network: its row, or for an identity
    the edge cost where the table has the no-op rows to tell it."""
    ms = table.latency(block, shape)
    noops = [table.rows.get(row_key(name, shape)) for name in NOOP_PARTS]
    if any(r is None or r.status != "ok" or r.median_ms is None for r in noops) or not is_identity(block, shape):
        return ms
    return max(ms, edge_ms(noops[0].median_ms, noops[1].median_ms))  # type: ignore[union-attr, arg-type]
