"""The library behind each CLI command: benchmark, search, train, export.

Each function takes resolved objects (a space, a target, configs), does one stage and
returns a report the CLI prints. Tests and other programs call these directly.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.device import HOST_DEVICE, host_info
from benchmarks.harness import BenchmarkJob, benchmark_space
from benchmarks.predict import LatencyModel
from benchmarks.protocol import Protocol
from benchmarks.table import LatencyTable, expect_table_for, load_table
from blocks.architecture import Architecture, load_architecture
from blocks.network import DerivedNet
from blocks.space import SearchSpace
from export.base import Artifact
from export.verify import CheckResult, check_against_torch
from pipeline.data import Splits
from pipeline.errors import PipelineError
from pipeline.search import SearchConfig, SearchResult, run_search
from pipeline.targets import Target
from pipeline.train import TrainConfig, evaluate, loader, train_network
from pipeline.weights import load_weights, save_weights
from pipeline.workspace import Workspace, weights_path

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- benchmark
@dataclass(frozen=True)
class BenchmarkReport:
    table: LatencyTable
    path: Path
    measured: int

    @property
    def unavailable(self) -> list[str]:
        return [k for k, r in self.table.rows.items() if r.status != "ok"]


def benchmark(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol,
              device: str = HOST_DEVICE, table_path: Path | None = None, force: bool = False,
              progress: bool = True) -> BenchmarkReport:
    """Measure every (layer, block) of `space` for `target` on this host and write the table."""
    if target.runner is None:
        raise PipelineError(f"target '{target.name}' has no runtime on this machine; import a table measured on the device")
    exporter, runner = target.make_exporter(), target.make_runner(protocol.threads)
    path = table_path or ws.table(space.name, target.name, device)
    provenance = {
        "target": target.name, "device": device, "host": host_info(),
        "format": exporter.format, "exporter": exporter.name, "exporter_versions": exporter.versions(),
        "exporter_options": exporter.fingerprint(), "runtime": runner.runtime,
        "runtime_version": runner.version(), "threads": protocol.threads, "protocol": protocol.to_dict(),
        "space": space.name, "space_fingerprint": space.fingerprint, "block_set": list(space.blocks),
        "unit": "ms",
    }
    job = BenchmarkJob(space, exporter, runner, target.tolerance, protocol, path, ws.cache, provenance, force)
    table, measured = benchmark_space(job, progress)
    return BenchmarkReport(table, path, measured)


def find_table(space: SearchSpace, target: Target, ws: Workspace, device: str,
               table_path: Path | None) -> tuple[LatencyTable, Path]:
    path = table_path or ws.table(space.name, target.name, device)
    if table_path is None and not path.exists():
        raise PipelineError(
            f"no latency table for space '{space.name}' on {target.name}/{device} at '{path}'; "
            f"run 'pipeline benchmark --target {target.name} --space {space.name}' first"
        )
    table = load_table(path)
    expect_table_for(table, target.name, device, path)
    table.check_fits(space)
    return table, path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------- search
@dataclass(frozen=True)
class SearchReport:
    architecture: Architecture
    path: Path
    result: SearchResult
    predicted_ms: float
    derived_test_acc: float


@torch.no_grad()
def recalibrate_bn(net: torch.nn.Module, splits: Splits, device: str, batch_size: int = 128) -> None:
    """Re-estimate BN statistics of inherited weights: inside the super-net each block saw a
    mixture's inputs, so its running statistics do not fit the derived network."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
    net.train()
    for x, _ in loader(splits.w, batch_size, shuffle=False):
        net(x.to(device))
    net.eval()


def search(space: SearchSpace, target: Target, ws: Workspace, cfg: SearchConfig, splits: Splits,
           device: str = HOST_DEVICE, table_path: Path | None = None, out: Path | None = None,
           progress: bool = True) -> SearchReport:
    table, tpath = find_table(space, target, ws, device, table_path)
    latency = LatencyModel.from_table(table, space)
    if splits.num_classes != space.num_classes:
        log.info("data has %d classes, space '%s' %d: the classifier row of the table is for %d",
                 splits.num_classes, space.name, space.num_classes, space.num_classes)
    result = run_search(space, latency, splits, cfg, progress)
    derived = result.supernet.get_active_subnet(result.blocks).to(cfg.device)
    recalibrate_bn(derived, splits, cfg.device)
    derived_acc = evaluate(derived, splits.test, cfg.device)
    predicted = latency.predict(space, result.blocks)
    fastest, slowest = latency.bounds()
    out = out or ws.architecture(space.name, target.name, device)
    info: dict[str, Any] = {
        "predicted_latency_ms": predicted,
        "latency": {"predictor": "table sum", "fixed_ms": latency.fixed_ms,
                    "space_fastest_ms": fastest, "space_slowest_ms": slowest},
        "table": {"path": str(tpath), "sha256": _sha256(tpath), "target": table.target,
                  "device": table.device, "host": table.provenance.get("host")},
        "alpha": result.alpha_table(),
        "search": cfg.to_dict(),
        "data": {"source": splits.source, "classes": splits.num_classes,
                 "w": len(splits.w), "theta": len(splits.theta), "test": len(splits.test)},
        "supernet_test_accuracy": result.supernet_test_acc,
        "inherited_test_accuracy": derived_acc,
        "history": result.history,
    }
    arch = Architecture(space, result.blocks, info)
    save_weights(weights_path(out, "supernet"), derived.cpu(), "supernet", derived_acc)
    arch.save(out)
    return SearchReport(arch, out, result, predicted, derived_acc)


# ---------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainReport:
    path: Path
    test_accuracy: float


def train(arch_path: Path, splits: Splits, cfg: TrainConfig, space: SearchSpace | None = None,
          progress: bool = True) -> TrainReport:
    """Train the derived network from scratch (FBNet's practice) and save it beside the architecture."""
    arch = load_architecture(arch_path, space)
    net = DerivedNet(arch.space, arch.blocks, splits.num_classes)
    acc = train_network(net, splits, cfg, progress)
    out = weights_path(arch_path, "trained")
    save_weights(out, net.cpu(), "trained", acc)
    return TrainReport(out, acc)


# ---------------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportReport:
    artifact: Artifact
    weights_source: str
    test_accuracy: float | None
    check: CheckResult | None
    measured: dict[str, float] | None
    predicted_ms: float | None
    table_path: Path | None

    @property
    def error_pct(self) -> float | None:
        if self.measured is None or self.predicted_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.measured["median_ms"]) / self.measured["median_ms"]


def _load_net(arch: Architecture, arch_path: Path) -> tuple[DerivedNet, str, float | None]:
    """Trained weights when present, else the super-net's inherited ones, else refuse."""
    for kind in ("trained", "supernet"):
        p = weights_path(arch_path, kind)
        if p.exists():
            w = load_weights(p, arch.space, arch.blocks)
            return w.net, w.source, w.test_accuracy
    raise PipelineError(
        f"no weights beside '{arch_path}'; run 'pipeline train --arch {arch_path}' or pass --train"
    )


def export(arch_path: Path, target: Target, ws: Workspace, protocol: Protocol, device: str = HOST_DEVICE,
           space: SearchSpace | None = None, table_path: Path | None = None, out: Path | None = None) -> ExportReport:
    """Export the derived network, check it against PyTorch, time it, and compare with the table."""
    arch = load_architecture(arch_path, space)
    net, source, acc = _load_net(arch, arch_path)
    exporter = target.make_exporter()
    out = out or ws.export_dir(arch.space.name, target.name, device) / f"model{exporter.suffix}"
    r = arch.space.resolution
    x = torch.randn(1, arch.space.in_channels, r, r, generator=torch.Generator().manual_seed(0))
    artifact = exporter.export(net, (x,), out)
    check = measured = None
    if target.runner is not None:
        runner = target.make_runner(protocol.threads)
        check = check_against_torch(net, (x,), runner.load(artifact), target.tolerance,
                                    f"derived network ({exporter.format})")
        measured = runner.time(artifact, [x.numpy()], protocol).stats()
    predicted, tpath = _prediction(arch, target, ws, device, table_path)
    return ExportReport(artifact, source, acc, check, measured, predicted, tpath)


def _prediction(arch: Architecture, target: Target, ws: Workspace, device: str,
                table_path: Path | None) -> tuple[float | None, Path | None]:
    path = table_path or ws.table(arch.space.name, target.name, device)
    if not path.exists():
        return None, None
    table = load_table(path)
    expect_table_for(table, target.name, device, path)
    return LatencyModel.from_table(table, arch.space).predict(arch.space, arch.blocks), path
