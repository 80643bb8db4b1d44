"""The ExecuTorch runtime's Python bindings for `.pte` programs.

`executorch` runs XNNPACK-delegated programs anywhere the wheel installs; `executorch-coreml`
needs the Core ML backend, which exists only in the macOS build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.runners.base import RUNNERS, Run, Runner
from export.base import Artifact, package_version, quiet_converters
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class ExecuTorchRunnerOptions:
    """No options: the thread count comes from the protocol, the delegate from the program."""


@RUNNERS.register("executorch")
class ExecuTorchRunner(Runner):
    name = "executorch"
    formats = ("pte",)
    runtime = "executorch"
    Options = ExecuTorchRunnerOptions
    modules = ("executorch",)

    def version(self) -> str:
        return package_version("executorch")

    def load(self, artifact: Artifact) -> Run:
        import torch

        self.require_platform()
        with quiet_converters():  # the native runtime logs CPU probing on first import
            from executorch.runtime import Runtime

            _set_threads(self.threads)
        try:
            method = Runtime.get().load_program(str(artifact.path)).load_method("forward")
        except Exception as e:
            raise PipelineError(
                f"ExecuTorch cannot load '{artifact.path}' ({first_line(e)}); the file is corrupt or truncated: "
                "export it again"
            ) from None

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            outs = method.execute([torch.from_numpy(x) for x in inputs])
            return [o.numpy() for o in outs]

        return run


@RUNNERS.register("executorch-coreml")
class ExecuTorchCoreMLRunner(ExecuTorchRunner):
    name = "executorch-coreml"
    platforms = ("darwin",)
    platform_note = (
        "ExecuTorch's Core ML backend runs only on macOS or iOS: run the same command on a Mac, "
        "or import a table measured there with 'pipeline benchmark import'"
    )


def _set_threads(n: int) -> None:
    """XNNPACK's thread pool is process-wide in the Python bindings (one per core by default);
    pin it to the protocol's thread count so the recorded setting is the one timed."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != n:
        portable_lib._unsafe_reset_threadpool(n)
