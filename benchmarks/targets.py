"""Deployment targets: a format (exporter + its options) and a runtime (runner + its options).

Targets are data. The built-in five are registered here; a user adds one with a YAML/TOML
file passed as `--target my-target.yaml` (optionally `base: ios` to start from a built-in),
and overrides single options with `--target-option compute_units=CPU_ONLY`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.runners import RUNNERS, Runner
from export import EXPORTERS, Exporter
from export.verify import FP16, FP32, Tolerance
from core.errors import PipelineError
from core.fileio import read_config
from core.registry import Registry


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    exporter: str
    runner: str
    exporter_options: dict[str, Any] = field(default_factory=dict)
    runner_options: dict[str, Any] = field(default_factory=dict)
    # None: FP16 when the exporter's precision is fp16, FP32 otherwise.
    tolerance: Tolerance | None = None

    def make_exporter(self) -> Exporter:
        return EXPORTERS.get(self.exporter)(**self.exporter_options)

    def make_runner(self, threads: int) -> Runner:
        return RUNNERS.get(self.runner)(threads=threads, **self.runner_options)

    def runner_class(self) -> type[Runner]:
        return RUNNERS.get(self.runner)

    def tolerance_for(self, exporter: Exporter) -> Tolerance:
        if self.tolerance is not None:
            return self.tolerance
        return FP16 if getattr(exporter, "precision", "fp32") == "fp16" else FP32

    def with_options(self, options: dict[str, Any]) -> "Target":
        """Route each `key=value` to the exporter or the runner that declares it."""
        exp_fields = {f.name for f in dataclasses.fields(EXPORTERS.get(self.exporter).Options)}
        run_fields = {f.name for f in dataclasses.fields(RUNNERS.get(self.runner).Options)}
        exp, run = dict(self.exporter_options), dict(self.runner_options)
        for key, value in options.items():
            if key in exp_fields:
                exp[key] = value
            if key in run_fields:
                run[key] = value
            if key not in exp_fields | run_fields:
                valid = ", ".join(sorted(exp_fields | run_fields)) or "none"
                raise PipelineError(
                    f"target '{self.name}' ({self.exporter} exporter, {self.runner} runner) has no option "
                    f"'{key}'; its options: {valid}"
                )
        return dataclasses.replace(self, exporter_options=exp, runner_options=run)

    def check(self) -> None:
        """Build the exporter and runner once so bad options fail before any work starts."""
        self.make_exporter()
        self.make_runner(1)

    def install_hint(self) -> str:
        extra = EXPORTERS.get(self.exporter).extra
        return f"pip install -e '.[{extra}]'" if extra else "pip install -e ."

    def exportable_here(self) -> str | None:
        """None when this machine can export to the target's format, else why not."""
        missing = EXPORTERS.get(self.exporter).missing()
        if missing:
            return f"needs Python module {missing[0]}: {self.install_hint()}"
        return None

    def measurable_here(self) -> str | None:
        """None when this machine can run (and time) the target's artifacts, else why not."""
        return self.exportable_here() or self.runner_class().unavailable_reason()


def require_exporter(target: Target) -> None:
    reason = target.exportable_here()
    if reason is not None:
        raise PipelineError(f"target '{target.name}' cannot export here: {reason}")


TARGETS: Registry[Target] = Registry("target")

TARGETS.add("ios", Target(
    name="ios", description="Core ML ML Program (.mlpackage), timed by Core ML on macOS",
    exporter="coreml", runner="coreml",
    exporter_options={"minimum_deployment_target": "iOS16", "precision": "fp16"},
    runner_options={"compute_units": "ALL"},
))
TARGETS.add("ios-executorch", Target(
    name="ios-executorch", description="ExecuTorch .pte delegated to Core ML, timed on macOS",
    exporter="executorch", runner="executorch-coreml",
    exporter_options={"delegate": "coreml", "minimum_deployment_target": "iOS17", "precision": "fp16",
                      "compute_units": "ALL"},
))
TARGETS.add("android", Target(
    name="android", description="LiteRT (TFLite) flatbuffer, timed by the LiteRT interpreter with XNNPACK",
    exporter="litert", runner="litert",
))
TARGETS.add("android-executorch", Target(
    name="android-executorch", description="ExecuTorch .pte delegated to XNNPACK, timed by the ExecuTorch runtime",
    exporter="executorch", runner="executorch", exporter_options={"delegate": "xnnpack"},
))
TARGETS.add("desktop", Target(
    name="desktop", description="ONNX, timed by ONNX Runtime on this machine's CPU",
    exporter="onnx", runner="onnxruntime",
))

_FILE_KEYS = {"name", "description", "base", "exporter", "runner", "exporter_options", "runner_options", "tolerance"}


def target_from_file(path: str) -> Target:
    """A target described in YAML/TOML: either complete, or `base: NAME` plus what changes."""
    data = read_config(path, "target file")
    what = f"target file '{path}'"
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise PipelineError(f"{what}: unknown key '{unknown[0]}'; valid keys: {', '.join(sorted(_FILE_KEYS))}")
    base = TARGETS.get(data["base"]) if "base" in data else None
    if base is None and not {"exporter", "runner"} <= set(data):
        raise PipelineError(f"{what} needs 'exporter' and 'runner', or 'base' naming a target to start from")
    name = str(data.get("name", Path(path).stem))
    target = Target(
        name=name,
        description=str(data.get("description", base.description if base else name)),
        exporter=str(data.get("exporter", base.exporter if base else "")),
        runner=str(data.get("runner", base.runner if base else "")),
        exporter_options={} if "exporter" in data or base is None else dict(base.exporter_options),
        runner_options={} if "runner" in data or base is None else dict(base.runner_options),
        tolerance=_tolerance(data.get("tolerance"), what) if "tolerance" in data else (base.tolerance if base else None),
    )
    EXPORTERS.get(target.exporter), RUNNERS.get(target.runner)
    options = {**_mapping(data.get("exporter_options", {}), what), **_mapping(data.get("runner_options", {}), what)}
    return target.with_options(options)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PipelineError(f"{what}: options must be a mapping of name: value")
    return value


def _tolerance(value: Any, what: str) -> Tolerance:
    if not (isinstance(value, dict) and set(value) == {"atol", "rtol"}):
        raise PipelineError(f"{what}: 'tolerance' must be {{atol: NUMBER, rtol: NUMBER}}")
    return Tolerance(float(value["atol"]), float(value["rtol"]))


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`KEY=VALUE` strings from the CLI; values are read as YAML scalars (1, true, fp16)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"target option '{pair}' must look like KEY=VALUE, e.g. compute_units=CPU_ONLY")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def resolve_target(value: str, options: dict[str, Any] | None = None) -> Target:
    """A registered target name or a YAML/TOML target file, with `--target-option` overrides."""
    if value in TARGETS or Path(value).suffix not in (".yaml", ".yml", ".toml", ".json"):
        target = TARGETS.get(value)
    else:
        target = target_from_file(value)
    target = target.with_options(options) if options else target
    target.check()
    return target
