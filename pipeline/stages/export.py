"""The export stage: the derived network in the target's format, checked against PyTorch,
timed end to end here and set beside the table's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.device import HOST_DEVICE
from benchmarks.agent.client import Remote, connect
from benchmarks.isolate import NetworkTimer
from benchmarks.predict import LatencyModel, arch_key
from benchmarks.protocol import Protocol
from benchmarks.table import expect_table_for, load_table
from blocks.space import SearchSpace
from benchmarks.targets import Target, require_exporter
from blocks.architecture import Architecture, load_architecture
from blocks.network import DerivedNet
from core.errors import PipelineError
from core.workspace import Workspace, weights_path
from export.base import Artifact
from export.verify import CheckResult, check_against_torch
from pipeline.training.weights import load_weights


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
    operations_estimated: list[dict[str, Any]] | None = None  # per operation, as the device's tooling estimates it

    @property
    def error_pct(self) -> float | None:
        if self.measured is None or self.predicted_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.measured["median_ms"]) / self.measured["median_ms"]

    def to_dict(self) -> dict[str, Any]:
        """`export --json`: the model written, its check against PyTorch, its time and the prediction."""
        check = None if self.check is None else {"max_abs_err": self.check.max_abs_err, "max_ref": self.check.max_ref,
                                                 "ok": self.check.ok}
        return {"model": str(self.artifact.path), "format": self.artifact.format, "target": self.target,
                "device": self.device, "architecture": str(self.arch_path) if self.arch_path else None,
                "weights": self.weights_source, "test_accuracy": self.test_accuracy, "check": check,
                "measured": self.measured, "not_measured_because": self.not_measured_because,
                "predicted_ms": self.predicted_ms, "predictor": self.predictor or None,
                "operations_estimated": self.operations_estimated,
                "error_pct": self.error_pct, "table": str(self.table_path) if self.table_path else None}


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
           space: SearchSpace | None = None, table_path: Path | None = None, out: Path | None = None,
           remote: Remote | None = None, operations: bool = False) -> ExportReport:
    """Export the derived network, check it against PyTorch, time it (here, or on the device of
    the agent `remote` names), and compare with the table. With `operations`, also the time of
    each operation inside it, as the agent's device tooling estimates it (Core ML on an iPhone)."""
    if operations and remote is None:
        raise PipelineError("per-operation estimates come from a device's own tooling: add --remote URL (an agent "
                            "with the iphone backend)")
    arch = load_architecture(arch_path, space)
    net, source, acc = _load_net(arch, arch_path)
    exporter = target.make_exporter()
    out = out or ws.export_dir(arch.space.name, target.name, device) / f"model{exporter.suffix}"
    r = arch.space.resolution
    x = torch.randn(1, arch.space.in_channels, r, r, generator=torch.Generator().manual_seed(0))
    require_exporter(target)
    timer = connect(remote, target.runner, target.runner_options, protocol) if remote is not None else None
    artifact = exporter.export(net, (x,), out)
    check = measured = None
    not_here = target.measurable_here()
    tolerance, label = target.tolerance_for(exporter), f"derived network ({exporter.format})"
    if not_here is None:
        runner = target.make_runner(protocol.threads)
        check = check_against_torch(net, (x,), runner.load(artifact), tolerance, label)
        if device == HOST_DEVICE and timer is None:  # another device's prediction is not judged by this machine's time
            with NetworkTimer(runner, protocol) as here:
                measured = here.stats(here.load(artifact, [x.numpy()]))
    else:
        exporter.inspect(artifact)
    if timer is not None:
        with timer:
            index = timer.load(artifact, [x.numpy()])
            measured = timer.stats(index)
            outs = timer.outputs(index)
            if outs is not None:  # what the device itself computed
                check = check_against_torch(net, (x,), lambda inputs: outs, tolerance, f"{label} on {timer.device.id}")
            ops = timer.operations_estimated(index) if operations else None
        device, not_here = timer.table_device, None
    predicted, tpath, predictor = _prediction(arch, target, ws, device, table_path)
    return ExportReport(artifact, source, acc, check, measured, predicted, tpath, not_here, predictor, device, arch_path,
                        target.name, ops if timer is not None else None)


def _prediction(arch: Architecture, target: Target, ws: Workspace, device: str,
                table_path: Path | None) -> tuple[float | None, Path | None, str]:
    path = table_path or ws.table(arch.space.name, target.name, device)
    if not path.exists():
        return None, None, ""
    table = load_table(path)
    expect_table_for(table, target.name, device, path)
    model = LatencyModel.from_table(table, arch.space)
    name = model.name
    if model.calibration is not None and arch_key(arch.blocks) in model.calibration.fitted_keys:
        name += ", this network among them"  # not out of sample: say so beside its error
    return model.predict(arch.space, arch.blocks), path, name


