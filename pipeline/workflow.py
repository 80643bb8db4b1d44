"""The library behind each CLI command: benchmark, search, train, export.

Each function takes resolved objects (a space, a target, configs), does one stage and
returns a report the CLI prints. Tests and other programs call these directly.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.device import HOST_DEVICE, host_info
from benchmarks import importers
from benchmarks.harness import BenchmarkJob, benchmark_space, cached_export, inspect_rows, randomize_batchnorm
from benchmarks.isolate import NetworkTimer
from benchmarks.predict import LatencyModel
from benchmarks.protocol import Protocol
from benchmarks.table import Incomplete, LatencyTable, expect_table_for, load_table
from blocks.architecture import Architecture, load_architecture
from blocks.network import DerivedNet
from blocks.space import SearchSpace
from export.base import Artifact, Exporter
from export.verify import CheckResult, check_against_torch
from pipeline.data import Splits
from pipeline.errors import PipelineError, PlatformUnsupported
from pipeline import distributed
from pipeline.search import SearchConfig, SearchResult, check_latency_target, meets_target, run_search
from pipeline.sweep import SweepReport, SweepSpec
from pipeline.sweep import sweep as run_sweep
from pipeline.compare import Comparison, Entry, load_entry, write_outputs
from pipeline.compare import compare as run_compare
from pipeline.targets import Target, require_exporter, resolve_target
from pipeline.train import TrainConfig, evaluate, fresh_network, loader, train_network
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
              progress: bool = True, jobs: int = 1, rounds: int = 1, reference: bool = True) -> BenchmarkReport:
    """Measure every (layer, block) of `space` for `target` on this host and write the table
    (each row in `rounds` rounds, keeping its median round; timed against a reference row unless
    `reference` is False).

    Where the target's runtime does not exist here (Core ML off macOS), every block is still
    exported and checked, then PlatformUnsupported says how to obtain the table instead.
    """
    if device != HOST_DEVICE:  # a table belongs to where it was timed (a phone's is never timed here)
        raise PipelineError(f"benchmark times blocks on this machine ('{HOST_DEVICE}'); for '{device}', "
                            f"'pipeline benchmark --target {target.name} --device {device}' writes them to a bundle to "
                            "time there, or 'pipeline benchmark import' brings in a table measured there")
    require_exporter(target)
    exporter = target.make_exporter()
    unavailable = target.measurable_here()
    runner = None if unavailable else target.make_runner(protocol.threads)
    path = table_path or ws.table(space.name, target.name, device)
    provenance = {
        "target": target.name, "device": device, "host": host_info(),
        "format": exporter.format, "exporter": exporter.name, "exporter_versions": exporter.versions(),
        "exporter_options": exporter.fingerprint(), "runtime": target.runner_class().runtime,
        "runtime_version": runner.version() if runner else None, "runner_options": dict(target.runner_options),
        "threads": protocol.threads, "protocol": protocol.to_dict(), "rounds": rounds,
        "space": space.name, "space_fingerprint": space.fingerprint, "block_set": list(space.blocks),
        "unit": "ms",
    }
    job = BenchmarkJob(space, exporter, runner, target.tolerance_for(exporter), protocol, path, ws.cache,
                       provenance, force, jobs, rounds, reference)
    if runner is None:
        checked, bad = inspect_rows(job, progress)
        skipped = f"; {len(bad)} cannot be expressed: {bad[0]}" if bad else ""
        raise PlatformUnsupported(
            f"exported and checked {checked} {exporter.format} artifacts for '{space.name}'{skipped}; no latency "
            f"table written: {unavailable}"
        )
    table, measured = benchmark_space(job, progress)
    return BenchmarkReport(table, path, measured)


def import_table(file: Path, space: SearchSpace, target: Target, ws: Workspace, device: str,
                 table_path: Path | None = None, force: bool = False) -> BenchmarkReport:
    """Bind a table measured elsewhere (this tool's format, or ProxylessNAS/OFA lookup YAML) to a
    target, a device name and a space, and write it where search and export look for it."""
    if device == HOST_DEVICE:
        raise PipelineError(
            f"an imported table needs the name of the device it was measured on, not '{HOST_DEVICE}'; "
            "pass --device NAME (e.g. --device pixel1)"
        )
    path = table_path or ws.table(space.name, target.name, device)
    if path.exists() and not force:
        raise PipelineError(f"a table already exists at '{path}'; pass --force to replace it or --device NAME for another")
    from pipeline import bundle  # it builds on this module

    if bundle.is_bundle_measurements(file):  # the times of a `benchmark --device` bundle
        table = bundle.table_from_measurements(file, space, target, device)
    else:
        table = importers.import_table(file, target.name, device, space)
    table.save(path)
    return BenchmarkReport(table, path, 0)


def find_table(space: SearchSpace, target: Target, ws: Workspace, device: str,
               table_path: Path | None) -> tuple[LatencyTable, Path]:
    """The table for `space` on `target`/`device`, checked. `Incomplete` where there is none or
    it lacks rows the space needs; another `PipelineError` where it is damaged or another's."""
    path = table_path or ws.table(space.name, target.name, device)
    if table_path is None and not path.exists():
        how = (f"run 'pipeline benchmark --target {target.name} --space {space.name}' first" if device == HOST_DEVICE
               else f"time it on that device ('pipeline benchmark --target {target.name} --space {space.name} "
                    f"--device {device}' writes its blocks to a bundle to time there) or bring in a table measured "
                    f"there with 'pipeline benchmark import FILE ... --device {device}'")
        raise Incomplete(f"no latency table for space '{space.name}' on {target.name}/{device} at '{path}'; {how}")
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
           progress: bool = True, resume: bool = False) -> SearchReport | None:
    """Search against the (target, device) table; under torchrun every process trains and rank 0
    alone writes the checkpoint, the architecture and its weights (other ranks return None)."""
    table, tpath = find_table(space, target, ws, device, table_path)
    latency = LatencyModel.from_table(table, space)
    if splits.num_classes != space.num_classes:
        log.info("data has %d classes, space '%s' %d: the classifier row of the table is for %d",
                 splits.num_classes, space.name, space.num_classes, space.num_classes)
    out = out or ws.architecture(space.name, target.name, device)
    checkpoint = checkpoint_path(out)
    data_identity = {"source": splits.source, "classes": splits.num_classes,
                     "w": len(splits.w), "theta": len(splits.theta), "test": len(splits.test)}
    with distributed.launched(cfg.device) as ctx:
        result = run_search(space, latency, splits, cfg, progress, checkpoint, resume, ctx, {"data": data_identity})
        if not ctx.is_main:
            return None
        return _derive_and_save(space, latency, table, tpath, cfg, splits, result, out, data_identity, ctx.device)


def checkpoint_path(arch_path: Path) -> Path:
    return arch_path.with_name(arch_path.stem + ".checkpoint.pt")


def _derive_and_save(space: SearchSpace, latency: LatencyModel, table: LatencyTable, tpath: Path, cfg: SearchConfig,
                     splits: Splits, result: SearchResult, out: Path, data_identity: dict[str, Any],
                     compute: str) -> SearchReport:
    derived = result.supernet.get_active_subnet(result.blocks).to(compute)
    recalibrate_bn(derived, splits, compute)
    derived_acc = evaluate(derived, splits.test, compute)
    predicted = latency.predict(space, result.blocks)
    fastest, slowest = latency.bounds()
    info: dict[str, Any] = {
        "predicted_latency_ms": predicted,
        "latency": {"predictor": latency.name, "fixed_ms": latency.fixed_ms,
                    "space_fastest_ms": fastest, "space_slowest_ms": slowest},
        "table": {"path": str(tpath), "sha256": _sha256(tpath), "target": table.target,
                  "device": table.device, "host": table.provenance.get("host")},
        "alpha": result.alpha_table(),
        "search": cfg.to_dict(),
        "data": data_identity,
        "supernet_test_accuracy": result.supernet_test_acc,
        "inherited_test_accuracy": derived_acc,
        "history": result.history,
    }
    if cfg.latency_target is not None:
        changed = [i for i, (a, b) in enumerate(zip(result.argmax_blocks, result.blocks)) if a != b]
        info["latency_target"] = {"target_ms": cfg.latency_target, "met": meets_target(predicted, cfg.latency_target),
                                  "argmax_latency_ms": latency.predict(space, result.argmax_blocks),
                                  "layers_changed_to_meet_it": changed}
    arch = Architecture(space, result.blocks, info)
    save_weights(weights_path(out, "supernet"), derived.cpu(), "supernet", derived_acc)
    arch.save(out)
    return SearchReport(arch, out, result, predicted, derived_acc)


def sweep_search(space: SearchSpace, target: Target, ws: Workspace, base: dict[str, Any], spec: SweepSpec,
                 splits: Splits, train_cfg: TrainConfig, random_n: int, device: str = HOST_DEVICE,
                 table_path: Path | None = None, progress: bool = True) -> SweepReport:
    """`pipeline search --sweep`: one search per value, each trained briefly, beside random ones."""
    table, _ = find_table(space, target, ws, device, table_path)
    latency = LatencyModel.from_table(table, space)
    if spec.field == "latency_target":
        for value in spec.values:
            check_latency_target(space, latency, value)
    out = ws.search_dir(space.name, target.name, device) / "sweep"
    return run_sweep(space, latency, splits, base, spec, train_cfg, random_n, out, progress)


# ---------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainReport:
    path: Path
    test_accuracy: float


def train(arch_path: Path, splits: Splits, cfg: TrainConfig, space: SearchSpace | None = None,
          progress: bool = True) -> TrainReport:
    """Train the derived network from scratch (FBNet's practice) and save it beside the architecture."""
    arch = load_architecture(arch_path, space)
    net = fresh_network(arch.space, arch.blocks, splits.num_classes, cfg.seed)
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
    not_measured_because: str | None = None
    predictor: str = "table sum"
    device: str = HOST_DEVICE  # the table's device: not this machine, so not timed here
    arch_path: Path | None = None
    target: str = ""

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
    require_exporter(target)
    artifact = exporter.export(net, (x,), out)
    check = measured = None
    not_here = target.measurable_here()
    if not_here is None:
        runner = target.make_runner(protocol.threads)
        check = check_against_torch(net, (x,), runner.load(artifact), target.tolerance_for(exporter),
                                    f"derived network ({exporter.format})")
        if device == HOST_DEVICE:  # another device's prediction is not judged by this machine's time
            with NetworkTimer(runner, protocol) as timer:
                measured = timer.stats(timer.load(artifact, [x.numpy()]))
    else:
        exporter.inspect(artifact)
    predicted, tpath, predictor = _prediction(arch, target, ws, device, table_path)
    return ExportReport(artifact, source, acc, check, measured, predicted, tpath, not_here, predictor, device, arch_path, target.name)


def _prediction(arch: Architecture, target: Target, ws: Workspace, device: str,
                table_path: Path | None) -> tuple[float | None, Path | None, str]:
    path = table_path or ws.table(arch.space.name, target.name, device)
    if not path.exists():
        return None, None, ""
    table = load_table(path)
    expect_table_for(table, target.name, device, path)
    model = LatencyModel.from_table(table, arch.space)
    return model.predict(arch.space, arch.blocks), path, model.name


# ---------------------------------------------------------------------------- compare
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
        check_against_torch(module, (x,), target.make_runner(1).load(artifact), target.tolerance_for(exporter), label)
    else:
        exporter.inspect(artifact)


def measure_architecture(arch: Architecture, target: Target, protocol: Protocol, cache_dir: Path) -> float | None:
    """End-to-end median latency of `arch` on `target` here, or None where it cannot run here."""
    if target.measurable_here() is not None:
        return None
    artifact, x = export_architecture(arch, target, cache_dir)
    with NetworkTimer(target.make_runner(protocol.threads), protocol) as timer:
        return timer.median_ms(timer.load(artifact, [x]))


def compare(specs: list[tuple[Path, Path, str | None]], ws: Workspace, protocol: Protocol, measure: bool = True,
            out_dir: Path | None = None) -> tuple[Comparison, dict[str, Path]]:
    """Compare (table, architecture, label) pairs; time each architecture on every entry that is
    this host's table of a target that runs here. Writes compare.md/.json/.png."""
    entries = [load_entry(t, a, label) for t, a, label in specs]

    def timer(on: Entry, arch: Architecture) -> float | None:
        if on.table.device != HOST_DEVICE:
            return None  # a phone's column: this machine's timing would say nothing about it
        return measure_architecture(arch, resolve_target(on.table.target), protocol, ws.cache)

    comparison = run_compare(entries, timer if measure else None)
    return comparison, write_outputs(comparison, out_dir or ws.root / "compare")
