"""Deployment targets: a format (exporter + its options) and a runtime (runner + its options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.runners import RUNNERS, Runner
from export import EXPORTERS, Exporter, Tolerance
from pipeline.registry import Registry


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    exporter: str
    runner: str | None  # None: no runtime for this format can run on any host we support
    tolerance: Tolerance
    exporter_options: dict[str, Any] = field(default_factory=dict)
    runner_options: dict[str, Any] = field(default_factory=dict)

    def make_exporter(self) -> Exporter:
        return EXPORTERS.get(self.exporter)(**self.exporter_options)

    def make_runner(self, threads: int) -> Runner:
        assert self.runner is not None, f"target {self.name} has no runner"
        return RUNNERS.get(self.runner)(threads=threads, **self.runner_options)


TARGETS: Registry[Target] = Registry("target")

TARGETS.add("desktop", Target(
    name="desktop",
    description="ONNX, run by ONNX Runtime on this machine's CPU",
    exporter="onnx",
    runner="onnxruntime",
    tolerance=Tolerance(atol=1e-4, rtol=1e-3),
))
