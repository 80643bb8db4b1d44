"""`pipeline run`: benchmark -> calibrate -> search -> (train) -> export in one call, on the
embedded digits by default. Each stage's report goes to `on_stage` as soon as it is done, so a caller
can show progress; the whole run's reports come back together."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from benchmarks.device import HOST_DEVICE
from benchmarks.protocol import Protocol
from benchmarks.predict import table_calibration
from benchmarks.table import find_table, load_table
from benchmarks.targets import Target
from blocks.space import SearchSpace
from core.config import build_config
from core.errors import PipelineError
from core.workspace import Workspace
from pipeline.stages import benchmark as benchmark_stage
from pipeline.stages import export as export_stage
from pipeline.stages import search as search_stage
from pipeline.stages import train as train_stage
from pipeline.stages import validate as validate_stage
from pipeline.training.data import load_data
from pipeline.training.distributed import check_device, single_process
from pipeline.training.loop import TrainConfig
from pipeline.training.search import SearchConfig
from pipeline.training.sweep import SweepReport, parse_sweep

OnStage = Callable[[str, Any], None]


# The calibration `run` fits where the table has none: blocks timed alone each pay the runtime's
# per-call overhead, which a whole network pays once, so on a small space the plain sum
# over-predicts by far (+90% on `tiny`, desktop). 20 random networks, half to fit and half to
# judge, as `validate` does (docs/validate.md, "The first prediction").
RUN_CALIBRATION = validate_stage.ValidateConfig(samples=20)


@dataclass(frozen=True)
class RunReport:
    benchmark: benchmark_stage.BenchmarkReport | None  # None where the table is another device's
    search: search_stage.SearchReport
    train: train_stage.TrainReport | None
    export: export_stage.ExportReport
    calibrate: validate_stage.ValidateReport | None = None  # None where the table had one, or it was not asked for

    def to_dict(self) -> dict[str, Any]:
        """`run --json`: each stage's own `--json` object (None for a stage that did not run here)."""
        return {"benchmark": self.benchmark.to_dict() if self.benchmark else None,
                "calibrate": self.calibrate.to_dict() if self.calibrate else None, "search": self.search.to_dict(),
                "train": self.train.to_dict() if self.train else None, "export": self.export.to_dict()}


def run(space: SearchSpace, target: Target, ws: Workspace, cfg: SearchConfig, protocol: Protocol, data: str = "digits",
        device: str = HOST_DEVICE, train: TrainConfig | None = TrainConfig(), progress: bool = True,
        on_stage: OnStage = lambda name, report: None,
        calibrate: validate_stage.ValidateConfig | None = RUN_CALIBRATION) -> RunReport:
    """The whole loop. `train=None` exports the super-net's inherited weights untrained;
    `calibrate=None` leaves a table without a calibration as it is."""
    single_process("pipeline run")  # every process would benchmark and export
    check_device(cfg.device)  # before minutes of benchmarking
    search_stage.refuse_if_written(ws.architecture(space.name, target.name, device), "search")  # not after the benchmark
    bench = None
    on_stage("benchmark", None)
    if device == HOST_DEVICE:
        bench, fitted = _benchmark_and_calibrate(space, target, ws, protocol, calibrate, progress, on_stage)
    else:  # a device's table is timed there (benchmark --device writes the bundle) or imported
        find_table(space, target.name, ws, device, None, target.measurable_here())
    on_stage("search", None)
    splits = load_data(data, cfg.resolution or space.resolution, space.in_channels, cfg.seed)
    found = search_stage.search(space, target, ws, cfg, splits, device, progress=progress)
    assert found is not None  # one process: it is rank 0
    on_stage("search", found)
    trained = None
    if train is not None:
        on_stage("train", None)
        trained = train_stage.train(found.path, splits, TrainConfig(epochs=train.epochs, lr=train.lr, seed=cfg.seed,
                                                                    device=cfg.device), space, progress=progress)
        on_stage("train", trained)
    on_stage("export", None)
    exported = export_stage.export(found.path, target, ws, protocol, device, space)
    on_stage("export", exported)
    return RunReport(bench, found, trained, exported, fitted if bench is not None else None)


def _benchmark_and_calibrate(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol,
                             calibrate: validate_stage.ValidateConfig | None, progress: bool, on_stage: OnStage
                             ) -> tuple[benchmark_stage.BenchmarkReport, validate_stage.ValidateReport | None]:
    """This machine's table, and its calibration where it has none. Where the table's own rows,
    re-timed while the networks were, no longer match it (`stale`: the machine was busier or
    idler while the table was timed), the table is what is wrong, whatever the fit made of it (a
    scale out of range, refused, or an intercept that happened to absorb it): it is measured
    again, once, and calibrated again."""
    fitted = None
    for attempt in range(2):
        bench = benchmark_stage.benchmark(space, target, ws, protocol, HOST_DEVICE, force=attempt > 0,
                                          progress=progress, jobs=os.cpu_count() or 1)
        on_stage("benchmark", bench)
        fitted = _calibrate(space, target, ws, protocol, calibrate, progress, on_stage) if calibrate else None
        stale = fitted is not None and (fitted.drift or {}).get("verdict") == "stale"
        if not stale or attempt:
            break
        on_stage("remeasure", fitted)
    return bench, fitted


def _calibrate(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol,
               cfg: validate_stage.ValidateConfig, progress: bool,
               on_stage: OnStage) -> validate_stage.ValidateReport | None:
    """Fit this machine's table a calibration, unless it has one or its target is not timed here."""
    if target.measurable_here() is not None:
        return None
    if table_calibration(load_table(ws.table(space.name, target.name, HOST_DEVICE)), space) is not None:
        return None
    on_stage("calibrate", None)
    report = validate_stage.validate(space, target, ws, protocol, replace(cfg, fit=True), HOST_DEVICE,
                                     progress=progress)
    on_stage("calibrate", report)
    return report


@dataclass(frozen=True)
class Sweep:
    """`search --sweep`: the values to search (PARAM=V1,V2,...), and how each network is judged."""
    spec: str
    random: int = 10  # random architectures trained beside the searched ones
    train_epochs: int = 5


def search_or_sweep(space: SearchSpace, target: Target, ws: Workspace, settings: dict[str, Any], data: str = "digits",
                    device: str = HOST_DEVICE, table_path: Path | None = None, out: Path | None = None,
                    resume: bool = False, sweep: Sweep | None = None,
                    progress: bool = True) -> search_stage.SearchReport | SweepReport | None:
    """`pipeline search`: one search on `data` with the config `settings` make (None on every
    torchrun process but rank 0), or a Pareto sweep of searches."""
    cfg = build_config(SearchConfig, settings, "search config")
    check_device(cfg.device)  # before the data loads
    if sweep is not None:
        single_process("pipeline search --sweep")
        if resume or out is not None:
            raise PipelineError("--sweep resumes by itself and writes into the workspace; drop --resume / --output")
    splits = load_data(data, cfg.resolution or space.resolution, space.in_channels, cfg.seed)
    if sweep is None:
        return search_stage.search(space, target, ws, cfg, splits, device, table_path, out, progress=progress,
                                   resume=resume)
    train_cfg = TrainConfig(epochs=sweep.train_epochs, seed=cfg.seed, device=cfg.device)
    return search_stage.sweep_search(space, target, ws, settings, parse_sweep(sweep.spec), splits, train_cfg,
                                     sweep.random, device, table_path, progress=progress)
