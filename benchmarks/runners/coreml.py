"""Core ML's `MLModel.predict` with the target's compute units: macOS only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.runners.base import RUNNERS, Run, Runner
from export.base import Artifact, package_version, quiet_import
from export.coreml import check_coreml_settings, coreml_feed, coreml_outputs
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class CoreMLRunnerOptions:
    compute_units: str = "ALL"


@RUNNERS.register("coreml")
class CoreMLRunner(Runner):
    name = "coreml"
    formats = ("mlpackage",)
    runtime = "coremltools"
    Options = CoreMLRunnerOptions
    modules = ("coremltools",)
    platforms = ("darwin",)
    platform_note = (
        "Core ML runs only on macOS or iOS: run the same command on a Mac to measure it, "
        "or import a table measured there with 'pipeline benchmark import'"
    )
    takes_threads = False  # Core ML picks its own compute units
    manual_howto = (
        "On an iPhone: open each .mlpackage in Xcode, choose the Performance tab, pick the connected\n"
        "iPhone and create a report; its median prediction time is the number to write.\n"
    )

    def __init__(self, threads: int = 1, **options: Any) -> None:
        super().__init__(threads, **options)
        check_coreml_settings("iOS16", "fp16", self.options.compute_units)

    def version(self) -> str:
        return package_version("coremltools")

    def load(self, artifact: Artifact) -> Run:
        self.require_platform()
        ct = quiet_import("coremltools")

        try:
            model = ct.models.MLModel(str(artifact.path), compute_units=ct.ComputeUnit[self.options.compute_units])
        except Exception as e:
            raise PipelineError(f"Core ML cannot load '{artifact.path}' ({first_line(e)}); export it again") from None
        spec = model.get_spec()

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            return coreml_outputs(spec, model.predict(coreml_feed(spec, inputs)))

        return run
