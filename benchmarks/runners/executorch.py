"""The ExecuTorch runtime's Python bindings for `.pte` programs.

`executorch` runs XNNPACK-delegated programs anywhere the wheel installs; `executorch-coreml`
needs the Core ML backend, which exists only in the macOS build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from benchmarks.runners.base import RUNNERS, Call, DeviceTool, Run, Runner
from export.base import Artifact, package_version, quiet_converters
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class ExecuTorchRunnerOptions:
    """No options: the thread count comes from the protocol, the delegate from the program."""


def parse_executor_runner(text: str) -> float:
    """ExecuTorch `executor_runner`'s log -> ms per run: the total it prints over its
    `--num_executions` runs, divided by their number (the first run is in it: the runner has no
    warm-up, so time enough runs that it does not matter)."""
    m = re.search(r"Model executed successfully (\d+) time\(s\) in ([0-9.eE+-]+) ms", text)
    if m is None:
        raise ValueError("it has no 'Model executed successfully N time(s) in T ms' line: build executor_runner "
                         "with -DEXECUTORCH_ENABLE_LOGGING=ON and -DEXECUTORCH_PAL_DEFAULT=posix (a Release build "
                         "logs nothing, the Android PAL logs to logcat), from ExecuTorch 0.4 or later")
    runs = float(m.group(1))  # not int(): a count past a float's range would overflow the division
    if runs == 0:
        raise ValueError("it says the model ran 0 times, so it timed nothing")
    return float(m.group(2)) / runs


EXECUTOR_RUNNER = DeviceTool(
    "ExecuTorch's executor_runner built for Android with XNNPACK and its log on stderr (cmake "
    "-DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON -DEXECUTORCH_BUILD_XNNPACK=ON -DEXECUTORCH_ENABLE_LOGGING=ON "
    "-DEXECUTORCH_PAL_DEFAULT=posix)",
    "EXECUTOR_RUNNER", "/data/local/tmp/executor_runner",
    "'$TOOL' --model_path='$MODEL' --num_executions=50 --cpu_threads=$THREADS",
    parse_executor_runner,
    "each run: 50 executions timed together (executor_runner has no separate warm-up)")


@RUNNERS.register("executorch")
class ExecuTorchRunner(Runner):
    name = "executorch"
    formats = ("pte",)
    runtime = "executorch"
    Options = ExecuTorchRunnerOptions
    modules = ("executorch",)
    device_tool = EXECUTOR_RUNNER

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

    @classmethod
    def open_plain(cls, path: str, threads: int) -> Call:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool, process-wide in the bindings
        method = Runtime.get().load_program(path).load_method("forward")
        x = torch.randn(*method.metadata.input_tensor_meta(0).sizes(), generator=torch.Generator().manual_seed(0))
        return lambda: method.execute([x])


@RUNNERS.register("executorch-coreml")
class ExecuTorchCoreMLRunner(ExecuTorchRunner):
    name = "executorch-coreml"
    platforms = ("darwin",)
    platform_note = (
        "ExecuTorch's Core ML backend runs only on macOS or iOS: run the same command on a Mac, "
        "or import a table measured there with 'pipeline benchmark import'"
    )
    device_tool = None  # the Android executor_runner has no Core ML backend, and an iPhone no adb


def _set_threads(n: int) -> None:
    """XNNPACK's thread pool is process-wide in the Python bindings (one per core by default);
    pin it to the protocol's thread count so the recorded setting is the one timed."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != n:
        portable_lib._unsafe_reset_threadpool(n)
