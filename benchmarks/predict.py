"""Predicting a network's latency from a table: Lat(Θ) = fixed + Σ_l Σ_j t_j^(l) α_j^(l)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.table import LatencyTable
from blocks.space import SearchSpace


@dataclass(frozen=True)
class LatencyModel:
    """Per-layer latency vectors t^(l) (ms, one entry per candidate) and the fixed parts' ms."""

    per_layer: tuple[torch.Tensor, ...]
    fixed_ms: float

    @classmethod
    def from_table(cls, table: LatencyTable, space: SearchSpace) -> "LatencyModel":
        table.check_fits(space)
        per_layer = tuple(
            torch.tensor([table.latency(b, shape) for b in space.candidates(i)], dtype=torch.float32)
            for i, shape in enumerate(space.layers)
        )
        fixed = sum(table.latency(name, shape) for name, shape in space.fixed_parts())
        return cls(per_layer, float(fixed))

    def expected(self, alphas: list[torch.Tensor]) -> torch.Tensor:
        """Differentiable expected latency (ms) of the super-net under mixing weights α."""
        searchable = sum((t.to(a.device) * a).sum() for t, a in zip(self.per_layer, alphas))
        return searchable + self.fixed_ms

    def predict(self, space: SearchSpace, blocks: tuple[str, ...]) -> float:
        """Latency (ms) of one architecture: the sum of its rows."""
        return self.fixed_ms + sum(
            float(t[space.candidates(i).index(b)]) for i, (t, b) in enumerate(zip(self.per_layer, blocks))
        )

    def bounds(self) -> tuple[float, float]:
        """The fastest and slowest architecture the space holds, under this table."""
        lo = self.fixed_ms + sum(float(t.min()) for t in self.per_layer)
        hi = self.fixed_ms + sum(float(t.max()) for t in self.per_layer)
        return lo, hi
