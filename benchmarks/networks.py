"""Whole networks for a target: exported (cached like a block), checked against PyTorch
where the target's runtime runs here, and timed end to end. Validate, export, compare and
device bundles all time networks this one way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import cached_export, export_row, randomize_batchnorm, row_module
from benchmarks.agent.client import RemoteTimer
from benchmarks.isolate import NetworkTimer
from benchmarks.protocol import Protocol
from benchmarks.table import LatencyTable, required_rows, row_key
from benchmarks.targets import Target
from blocks.architecture import Architecture
from blocks.space import LayerShape, SearchSpace
from blocks.network import DerivedNet
from export.base import Artifact, Exporter
from core.errors import PipelineError
from export.verify import check_against_torch


def export_architecture(arch: Architecture, target: Target, cache_dir: Path) -> tuple[Artifact, np.ndarray]:
    """`arch` exported for `target` (cached like a block), checked against PyTorch here (where
    the target's runtime cannot run here, the artifact is only inspected), with the input it was
    checked on.

    Latency does not depend on weight values, so a seeded network stands in for trained ones.
    """
    torch.manual_seed(0)
    net = randomize_batchnorm(DerivedNet(arch.space, arch.blocks, arch.space.num_classes), 0)
    r = arch.space.resolution
    x = torch.randn(1, arch.space.in_channels, r, r, generator=torch.Generator().manual_seed(0))
    exporter = target.make_exporter()
    ident = {"architecture": list(arch.blocks), "space": arch.space.fingerprint}
    artifact = cached_export(exporter, net, (x,), cache_dir, ident)
    verify_here(target, exporter, net, x, artifact, f"architecture on {target.name}")
    return artifact, x.numpy()


def verify_here(target: Target, exporter: Exporter, module: torch.nn.Module, x: torch.Tensor, artifact: Artifact,
                label: str) -> None:
    """Check `artifact` against PyTorch on `x` where the target's runtime runs here, else with
    the converter's own tools (Core ML off macOS)."""
    if target.measurable_here() is None:
        check_against_torch(module, (x,), target.make_runner(1).load(artifact), target.tolerance_for(exporter), label,
                            exporter.mismatch_cause())
    else:
        exporter.inspect(artifact)


def network_timer(target: Target, protocol: Protocol, remote: RemoteTimer | None = None) -> NetworkTimer | RemoteTimer:
    """Where whole networks are timed: on the agent's device `remote` when given, else here."""
    return remote if remote is not None else NetworkTimer(target.make_runner(protocol.threads), protocol)


def measure_architecture(arch: Architecture, target: Target, protocol: Protocol, cache_dir: Path) -> float | None:
    """End-to-end median latency of `arch` on `target` here, or None where it cannot run here."""
    if target.measurable_here() is not None:
        return None
    artifact, x = export_architecture(arch, target, cache_dir)
    with NetworkTimer(target.make_runner(protocol.threads), protocol) as timer:
        return timer.median_ms(timer.load(artifact, [x]))


def recheck_rows(table: LatencyTable, space: SearchSpace, n: int = 8) -> list[tuple[str, LayerShape]]:
    """Table rows to re-time: every fixed part (in every network) and measured rows spread
    evenly over the table's range of latencies."""
    fixed = space.fixed_parts()
    rest = sorted((r for r in required_rows(space) if r not in fixed and table.rows[row_key(*r)].status == "ok"),
                  key=lambda r: table.latency(*r))
    k = max(n - len(fixed), 0)
    picks = sorted({int(i) for i in np.linspace(0, len(rest) - 1, k)}) if rest and k else []
    return fixed + [rest[i] for i in picks]


def recheck_inputs(rows: list[tuple[str, LayerShape]], table: LatencyTable, target: Target,
                   cache_dir: Path) -> list[tuple[Artifact, np.ndarray, float]]:
    """Each row to recheck as (artifact, input, its time in the table), found once for every pass."""
    exporter, out = target.make_exporter(), []
    for block, shape in rows:
        artifact = export_row(exporter, block, shape, cache_dir)  # cached by the benchmark
        if isinstance(artifact, str):
            raise PipelineError(f"table row {row_key(block, shape)} cannot be exported again: {artifact}")
        out.append((artifact, row_module(block, shape)[1].numpy(), table.latency(block, shape)))
    return out
