"""The export stage: the derived network in the target's format, checked against PyTorch,
timed end to end here and set beside the table's prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.device import HOST_DEVICE
from benchmarks.agent.client import Remote, connect
from benchmarks.isolate import NetworkTimer
from benchmarks.networks import export_architecture
from benchmarks.runners.base import Runner
from benchmarks.predict import Calibration, LatencyModel, arch_key, table_calibration
from benchmarks.protocol import Protocol
from benchmarks.table import LatencyTable, expect_table_for, load_table
from blocks.space import SearchSpace
from benchmarks.targets import Target, require_exporter
from blocks.architecture import Architecture, load_architecture
from blocks.network import DerivedNet
from core.errors import PipelineError
from core.workspace import Workspace, weights_path
from export.app import AppInterface, check_labels, write_sidecar
from export.base import Artifact, Exporter, package_version
from export.verify import CheckResult, check_against_torch
from export.quantize import Inputs
from pipeline.stages.quantized import QuantizeConfig, QuantizedExport, export_quantized
from pipeline.training.data import data_labels, normalization, searched_source
from pipeline.training.weights import load_weights


@dataclass(frozen=True)
class AppConfig:
    """How the app model takes its input: `layout` NCHW or NHWC (LiteRT), `io` float or int8 (an
    int8 LiteRT model's input and output)."""

    layout: str = "NCHW"
    io: str = "float"


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
    quantized: QuantizedExport | None = None  # an 8-bit precision's scheme and its check against the float model
    app: AppInterface | None = None  # the labels and preprocessing the model carries
    sidecar: Path | None = None  # the same facts beside the model, with its input and output tensors

    @property
    def judged_ms(self) -> float | None:
        """The measurement a prediction is judged against: on the calibration's scale where the
        network was timed beside the network its fit was timed against, else as timed."""
        if self.measured is None:
            return None
        return float(self.measured.get("at_calibration_speed_ms", self.measured["median_ms"]))

    @property
    def error_pct(self) -> float | None:
        if self.judged_ms is None or self.predicted_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.judged_ms) / self.judged_ms

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
                "error_pct": self.error_pct, "table": str(self.table_path) if self.table_path else None,
                "precision": self.quantized.quantization.precision if self.quantized else None,
                "quantization": self.quantized.quantization.to_dict() if self.quantized else None,
                "quantized_check": self.quantized.quality.to_dict() if self.quantized and self.quantized.quality
                else None,
                "sidecar": str(self.sidecar) if self.sidecar else None,
                "labels": list(self.app.labels) if self.app else None,
                "layout": self.app.layout if self.app else None}


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
           remote: Remote | None = None, operations: bool = False, quantize: QuantizeConfig = QuantizeConfig(),
           calibration: list[Inputs] | None = None, app_cfg: AppConfig = AppConfig()) -> ExportReport:
    """Export the derived network as an app ships it (its labels and preprocessing inside where
    the format allows, and in a sidecar JSON), check it against PyTorch, time it (here, or on the
    device of the agent `remote` names), and compare with the table. With `operations`, also the
    time of each operation inside it, as the agent's device tooling estimates it (Core ML on an
    iPhone). At an 8-bit precision the network is calibrated on the training data (or
    `calibration`) and written only if it keeps `quantize.goal` against the float model."""
    if operations and remote is None:
        raise PipelineError("per-operation estimates come from a device's own tooling: add --remote URL (an agent "
                            "with the iphone backend)")
    arch = load_architecture(arch_path, space)
    net, source, acc = _load_net(arch, arch_path)
    exporter = target.make_exporter()
    app = app_interface(arch, arch_path, target, exporter, device, app_cfg, quantize.data, source, acc,
                        int(net.classifier[-1].out_features))
    out = out or ws.export_dir(arch.space.name, target.name, device) / f"model{exporter.suffix}"
    r = arch.space.resolution
    x = torch.randn(1, arch.space.in_channels, r, r, generator=torch.Generator().manual_seed(0))
    require_exporter(target)
    reference, to_input = exporter.app_reference(net, app)
    x_app = to_input(x)
    timer = connect(remote, target.runner, target.runner_options, protocol) if remote is not None else None
    local = _table_at(arch, target, ws, device, table_path)  # read once: the calibration and the prediction
    quantized = None
    if exporter.quantization() is None:
        artifact = exporter.export(net, (x,), out, app=app)
    else:
        quantized = export_quantized(net, x, exporter, target, arch, out, quantize, calibration, app)
        artifact = quantized.artifact
    check = measured = None
    not_here = target.measurable_here()
    tolerance, label = target.tolerance_for(exporter), f"derived network ({exporter.format})"
    if not_here is None:
        runner = target.make_runner(protocol.threads)
        if quantized is None:  # an 8-bit model is judged on the held-out set, not one input's error
            check = check_against_torch(reference, (x_app,), runner.load(artifact), tolerance, label,
                                        exporter.mismatch_cause())
        if device == HOST_DEVICE and timer is None:  # another device's prediction is not judged by this machine's time
            measured = _time_here(runner, protocol, artifact, x_app, _calibration_of(arch, local), target,
                                  arch.space, ws)
    else:
        exporter.inspect(artifact)
    if timer is not None:
        with timer:
            index = timer.load(artifact, [x_app.numpy()])
            measured = timer.stats(index)
            outs = timer.outputs(index)
            if outs is not None and quantized is None:  # what the device itself computed
                check = check_against_torch(reference, (x_app,), lambda inputs: outs, tolerance,
                                            f"{label} on {timer.device.id}")
            ops = timer.operations_estimated(index) if operations else None
        device, not_here = timer.table_device, None
    sidecar = _sidecar(artifact, app, exporter, acc, quantized)
    found = local if timer is None else _table_at(arch, target, ws, device, table_path)
    predicted, tpath, predictor = _prediction(arch, target, device, found)
    return ExportReport(artifact, source, acc, check, measured, predicted, tpath, not_here, predictor, device, arch_path,
                        target.name, ops if timer is not None else None, quantized, app, sidecar)


def _sidecar(artifact: Artifact, app: AppInterface, exporter: Exporter, accuracy: float | None,
             quantized: QuantizedExport | None) -> Path:
    q = quantized
    return write_sidecar(artifact.path, app, exporter.interface(artifact),
                         {"precision": exporter.precision, "test_accuracy": accuracy,
                          "quantization": q.quantization.to_dict() if q else None,
                          "quantized_check": q.quality.to_dict() if q and q.quality else None})


def app_interface(arch: Architecture, arch_path: Path, target: Target, exporter: Exporter, device: str,
                  cfg: AppConfig, data: str | None, weights: str, accuracy: float | None,
                  num_classes: int) -> AppInterface:
    """The labels (the search's data, or `data`'s), the data's normalisation, and where the model
    came from, checked against what the exporter's format can take."""
    recorded = arch.info.get("labels")
    source = searched_source(arch.info, data)
    labels = tuple(str(v) for v in recorded) if recorded and data is None else data_labels(source)
    where = f"data '{source}'" if not recorded or data else f"architecture '{arch_path}'"
    space = arch.space
    table = arch.info.get("table") or {}
    searched = f"{table.get('target', target.name)}/{table.get('device', device)} latencies"
    accuracy_text = f"; held-out top-1 {accuracy:.3f} on '{source}'" if accuracy is not None else ""
    app = AppInterface(
        check_labels(labels, num_classes, where), space.resolution, space.in_channels,
        normalization(space.in_channels), cfg.layout, cfg.io,
        description=f"'{space.name}' network found by hardware-aware search on {searched}, exported for "
                    f"{target.name} at {exporter.precision}{accuracy_text}",
        version=package_version("fbnet-pipeline"),
        source={"space": space.name, "blocks": list(arch.blocks), "architecture": str(arch_path),
                "table": arch.info.get("table"), "target": target.name, "device": device,
                "precision": exporter.precision, "weights": weights})
    exporter.check_app(app)
    return app


def _table_at(arch: Architecture, target: Target, ws: Workspace, device: str,
              table_path: Path | None) -> tuple[Path, LatencyTable] | None:
    """The device's table for the space (or `table_path`), where there is one."""
    path = table_path or ws.table(arch.space.name, target.name, device)
    return (path, load_table(path)) if path.exists() else None


def _calibration_of(arch: Architecture, found: tuple[Path, LatencyTable] | None) -> Calibration | None:
    """The table's stored calibration for the space, where it names the network its fit was timed against."""
    if found is None:
        return None
    cal = table_calibration(found[1], arch.space)
    return cal if cal is not None and cal.reference_blocks and cal.reference_ms else None


def _time_here(runner: Runner, protocol: Protocol, artifact: Artifact, x: torch.Tensor, cal: Calibration | None,
               target: Target, space: SearchSpace, ws: Workspace) -> dict[str, Any]:
    """The network's end-to-end time here and, where the calibration names the network its fit
    was timed against, its time on the fit's scale: timed beside that network, repeat by repeat,
    as the fit's networks were, its ratio to it times that network's median in the fit. The
    machine's speed moves 5-40% within minutes here; a prediction is judged at the speed its
    calibration was fitted at, not at whatever speed the export met."""
    with NetworkTimer(runner, protocol) as here:
        net = here.load(artifact, [x.numpy()])
        if cal is None:
            return here.stats(net)
        ref, ref_x = export_architecture(Architecture(space, cal.reference_blocks), target, ws.cache)
        stats = here.stats(net, here.load(ref, [ref_x]))
    assert cal.reference_ms is not None
    now = float(np.median(stats["reference_ms"]))
    return {**stats, "at_calibration_speed_ms": float(stats["ratio"]) * cal.reference_ms,
            "reference_vs_calibration": now / cal.reference_ms}


def _prediction(arch: Architecture, target: Target, device: str,
                found: tuple[Path, LatencyTable] | None) -> tuple[float | None, Path | None, str]:
    if found is None:
        return None, None, ""
    path, table = found
    expect_table_for(table, target.name, device, path)
    model = LatencyModel.from_table(table, arch.space)
    name = model.name
    if model.calibration is not None and arch_key(arch.blocks) in model.calibration.fitted_keys:
        name += ", this network among them"  # not out of sample: say so beside its error
    return model.predict(arch.space, arch.blocks), path, name


