"""Deployment targets: a format (exporter + its options) and a runtime (runner + its options).

Targets are data. The built-in five are registered here; a user adds one with a YAML/TOML
file passed as `--target my-target.yaml` (optionally `base: ios` to start from a built-in),
and overrides single options with `--target-option compute_units=CPU_ONLY`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, RootModel

from benchmarks.runners import RUNNERS, Runner
from export import EXPORTERS, Exporter
from export.quantize import PRECISIONS
from export.verify import TOLERANCES, Tolerance
from core.config import MAX_TOLERANCE, Input, OptionValue, number_in, short, validate
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
    # None: the exporter's precision's (`export.verify.TOLERANCES`).
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
        return TOLERANCES[exporter.precision]

    def with_options(self, options: dict[str, Any], rename: bool = True) -> "Target":
        """Route each `key=value` to the exporter or the runner that declares it. With `rename`,
        a precision other than the target's names a target of its own (`android` with
        `precision=int8` is `android-int8`), so its tables and exports never mix with the float
        ones; a target file's own options define that target, and do not rename it."""
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
        name = self.name
        if rename and "precision" in options and options["precision"] != self.make_exporter().precision:
            name = precision_name(self.name, str(options["precision"]))
        return dataclasses.replace(self, name=name, exporter_options=exp, runner_options=run)

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
        return self.make_exporter().unavailable_reason()

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


def precision_name(name: str, precision: str) -> str:
    """The name of `name` at `precision`: its stem (without a precision suffix), where that stem
    is a built-in target whose own precision it is, else `STEM-PRECISION`."""
    stem = next((name[: -len(p) - 1] for p in PRECISIONS if name.endswith(f"-{p}")), name)
    if stem in TARGETS and TARGETS.get(stem).make_exporter().precision == precision:
        return stem
    return f"{stem}-{precision}"


def _at_precision(base: str, precision: str, description: str, **options: Any) -> None:
    """Register a built-in 8-bit target: the float target `base` at `precision` (plus
    `options`), named as `-o precision=...` on `base` names it."""
    t = TARGETS.get(base)
    t = dataclasses.replace(t, name=precision_name(base, precision), description=description,
                            exporter_options={**t.exporter_options, **options, "precision": precision})
    TARGETS.add(t.name, t)


_at_precision("ios", "w8", "Core ML ML Program with 8-bit weights (fp16 activations), timed by Core ML on macOS")
_at_precision("ios", "int8", "Core ML ML Program with 8-bit weights and activations; exported and timed on macOS",
              minimum_deployment_target="iOS17")
_at_precision("android", "int8", "LiteRT flatbuffer quantized to int8 (float input and output), timed with XNNPACK")
_at_precision("android-executorch", "int8",
              "ExecuTorch .pte quantized to int8 by the XNNPACK quantizer, timed by the ExecuTorch runtime")
_at_precision("desktop", "int8", "ONNX quantized to int8 (QDQ), timed by ONNX Runtime on this machine's CPU")


class ToleranceInput(Input):
    atol: number_in(0, MAX_TOLERANCE)  # type: ignore[valid-type]
    rtol: number_in(0, MAX_TOLERANCE)  # type: ignore[valid-type]


class TargetInput(Input):
    """A target file: complete (exporter and runner), or `base: NAME` plus what changes."""

    name: str | None = None
    description: str | None = None
    base: str | None = None
    exporter: str | None = None
    runner: str | None = None
    exporter_options: dict[str, OptionValue] = {}
    runner_options: dict[str, OptionValue] = {}
    tolerance: ToleranceInput | None = None


TARGET_FIX = "fix it in the target file ('pipeline targets' lists the built-in targets to start from with base:)"


def target_from_file(path: str) -> Target:
    """A target described in YAML/TOML: either complete, or `base: NAME` plus what changes."""
    what = f"target file '{path}'"
    m = validate(TargetInput, read_config(path, "target file"), what, TARGET_FIX)
    base = _named(TARGETS, m.base, "base", what) if m.base is not None else None
    if base is None and (m.exporter is None or m.runner is None):
        raise PipelineError(f"{what} needs 'exporter' and 'runner', or 'base' naming a target to start from; "
                            f"add them ('pipeline targets' lists the built-in targets)")
    name = m.name if m.name is not None else Path(path).stem
    exporter = m.exporter if m.exporter is not None else base.exporter  # type: ignore[union-attr]
    runner = m.runner if m.runner is not None else base.runner  # type: ignore[union-attr]
    _named(EXPORTERS, exporter, "exporter", what), _named(RUNNERS, runner, "runner", what)
    tolerance = Tolerance(m.tolerance.atol, m.tolerance.rtol) if m.tolerance else (base.tolerance if base else None)
    target = Target(
        name=name,
        description=m.description if m.description is not None else (base.description if base else name),
        exporter=exporter, runner=runner,
        exporter_options={} if m.exporter is not None or base is None else dict(base.exporter_options),
        runner_options={} if m.runner is not None or base is None else dict(base.runner_options),
        tolerance=tolerance,
    )
    try:
        target = target.with_options({**m.exporter_options, **m.runner_options}, rename=False)
        target.check()
    except PipelineError as e:  # an option the format lacks, or a value its exporter or runner refuses
        raise PipelineError(f"{what}: {e}") from None
    return target


def _named(registry: Registry[Any], name: str, field: str, what: str) -> Any:
    try:
        return registry.get(name)
    except PipelineError as e:
        raise PipelineError(f"{what}: {field}: {e}") from None


_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPTION_FIX = "give -o KEY=VALUE with a text, number or true/false value, e.g. -o compute_units=CPU_ONLY"


class OptionValues(RootModel[dict[str, OptionValue]]):
    """What `-o KEY=VALUE` flags give: option names and scalar values."""

    model_config = ConfigDict(strict=True)


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`KEY=VALUE` strings from the CLI; values are read as YAML scalars (1, true, fp16)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _OPTION_KEY.fullmatch(key):
            raise PipelineError(f"target option {short(pair)} must look like KEY=VALUE with KEY a name, e.g. "
                                "compute_units=CPU_ONLY")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except (yaml.YAMLError, ValueError, RecursionError):
            raise PipelineError(f"target option {short(pair)}: the value {short(value)} is not a YAML scalar; "
                                f"quote it (-o '{key}=\"...\"') or {OPTION_FIX}") from None
    return validate(OptionValues, out, "--target-option/-o", OPTION_FIX).root


def resolve_target(value: str, options: dict[str, Any] | None = None) -> Target:
    """A registered target name or a YAML/TOML target file, with `--target-option` overrides."""
    if value in TARGETS or Path(value).suffix not in (".yaml", ".yml", ".toml", ".json"):
        target = TARGETS.get(value)
    else:
        target = target_from_file(value)
    target = target.with_options(options) if options else target
    target.check()
    return target
