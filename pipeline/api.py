"""The Python API: each stage called by the names a user types on the command line.

    from pipeline import benchmark, search, train, export
    table = benchmark(target="desktop", space="tiny")
    found = search(target="desktop", space="tiny", epochs=3)

Every function resolves names (target, space, device, workspace) as the CLI does, runs one
stage and returns its report; each report's `to_dict()` is the command's `--json` object.
Progress bars are off unless `progress=True`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.device import HOST_DEVICE
from benchmarks.protocol import Protocol
from benchmarks.targets import Target, resolve_target
from blocks import resolve_space
from core.config import build_config
from core.workspace import Workspace
from pipeline import flow
from pipeline.stages import benchmark as benchmark_stage
from pipeline.stages import compare as compare_stage
from pipeline.stages import export as export_stage
from pipeline.stages import search as search_stage
from pipeline.stages import train as train_stage
from pipeline.stages import validate as validate_stage
from pipeline.training.loop import TrainConfig
from pipeline.training.search import SearchConfig

Where = str | os.PathLike


def _target(name: str, options: dict[str, Any] | None) -> Target:
    return resolve_target(name, dict(options or {}))


def benchmark(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
              options: dict[str, Any] | None = None, protocol: Protocol | None = None, force: bool = False,
              rounds: int = 1, reference: bool = True, jobs: int | None = None,
              progress: bool = False) -> benchmark_stage.BenchmarkReport:
    """`pipeline benchmark`: this machine's latency table for `space` on `target` (resumed if
    one is there). `options` are the target's `-o KEY=VALUE` overrides."""
    return benchmark_stage.benchmark(resolve_space(space), _target(target, options), Workspace(Path(out)),
                                     protocol or Protocol(), device, force=force, progress=progress,
                                     jobs=jobs or os.cpu_count() or 1, rounds=rounds, reference=reference)


def import_table(file: Where, *, target: str, device: str, space: str, out: Where = "pipeline-out",
                 force: bool = False) -> benchmark_stage.BenchmarkReport:
    """`pipeline benchmark import`: a table measured on `device` (this tool's, or a published lookup table)."""
    return benchmark_stage.import_table(Path(file), resolve_space(space), _target(target, None), Workspace(Path(out)),
                                        device, force=force)


def search(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
           data: str = "digits", resume: bool = False, progress: bool = False,
           **settings: Any) -> search_stage.SearchReport:
    """`pipeline search` against the (target, device) table; `settings` are the search config's
    keys (`epochs`, `loss`, `lam`, `mixing`, `latency_target`, `compute`-as-`device`, ...)."""
    found = flow.search_or_sweep(resolve_space(space), _target(target, None), Workspace(Path(out)), settings, data,
                                 device, resume=resume, progress=progress)
    assert isinstance(found, search_stage.SearchReport)  # one process, no sweep
    return found


def train(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
          arch: Where | None = None, data: str | None = None, epochs: int = TrainConfig.epochs,
          lr: float = TrainConfig.lr, seed: int = 0, compute: str = "cpu",
          progress: bool = False) -> train_stage.TrainReport:
    """`pipeline train`: the derived network trained from scratch, its weights saved beside it
    (on `data`, or the data its search used)."""
    path, resolved = train_stage.locate(Workspace(Path(out)), space, target, device, Path(arch) if arch else None)
    return train_stage.train_derived(path, resolved, data, TrainConfig(epochs=epochs, lr=lr, seed=seed, device=compute),
                                     progress)


def export(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
           arch: Where | None = None, options: dict[str, Any] | None = None,
           protocol: Protocol | None = None) -> export_stage.ExportReport:
    """`pipeline export`: the derived network in the target's format, checked against PyTorch and timed."""
    ws = Workspace(Path(out))
    path, resolved = train_stage.locate(ws, space, target, device, Path(arch) if arch else None)
    return export_stage.export(path, _target(target, options), ws, protocol or Protocol(), device, resolved)


def validate(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
             options: dict[str, Any] | None = None, protocol: Protocol | None = None, samples: int = 40,
             rounds: int = 7, fit: bool | None = None, seed: int = 0,
             progress: bool = False) -> validate_stage.ValidateReport:
    """`pipeline validate` here: whole random networks timed end to end against the table's prediction."""
    cfg = validate_stage.ValidateConfig(samples=samples, seed=seed, fit=fit, rounds=rounds)
    return validate_stage.validate(resolve_space(space), _target(target, options), Workspace(Path(out)),
                                   protocol or Protocol(), cfg, device, progress=progress)


def compare(*entries: str, space: str = "tiny", out: Where = "pipeline-out", labels: tuple[str, ...] = (),
            measure: bool = True, protocol: Protocol | None = None) -> compare_stage.Comparison:
    """`pipeline compare TARGET/DEVICE[@SPACE] ...`: architectures searched for different devices,
    side by side; writes compare.md/.json/.png into the workspace."""
    ws = Workspace(Path(out))
    specs = compare_stage.parse_entries(tuple(entries), tuple(labels), ws, space)
    comparison, _ = compare_stage.compare(specs, ws, protocol or Protocol(), measure)
    return comparison


def run(target: str = "desktop", space: str = "tiny", *, device: str = HOST_DEVICE, out: Where = "pipeline-out",
        data: str = "digits", train_epochs: int | None = TrainConfig.epochs, progress: bool = False,
        **settings: Any) -> flow.RunReport:
    """`pipeline run`: benchmark -> search -> train (`train_epochs=None` skips it) -> export."""
    cfg = build_config(SearchConfig, settings, "search config")
    train_cfg = TrainConfig(epochs=train_epochs) if train_epochs else None
    return flow.run(resolve_space(space), _target(target, None), Workspace(Path(out)), cfg, Protocol(), data, device,
                    train_cfg, progress=progress)
