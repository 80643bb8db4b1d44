"""ONNX Runtime on this machine's CPU, for `.onnx` artifacts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from benchmarks.runners.base import RUNNERS, Call, Run, Runner
from export.base import Artifact
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class OrtOptions:
    graph_optimization: str = "all"  # ORT's default level for deployment


_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@RUNNERS.register("onnxruntime")
class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    formats = ("onnx",)
    runtime = "onnxruntime"
    Options = OrtOptions

    def __init__(self, threads: int = 1, **options: object) -> None:
        super().__init__(threads, **options)
        if self.options.graph_optimization not in _LEVELS:
            raise PipelineError(
                f"onnxruntime option graph_optimization='{self.options.graph_optimization}' is not "
                f"one of {', '.join(_LEVELS)}"
            )

    def version(self) -> str:
        return ort.__version__

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        # A fixed thread count, sequential execution and no spinning-thread pool beyond it:
        # the recorded setting is the one that was timed.
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _LEVELS[self.options.graph_optimization]
        so.log_severity_level = 3
        return so

    def load(self, artifact: Artifact) -> Run:
        try:
            sess = ort.InferenceSession(
                str(artifact.path), self.session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            raise PipelineError(
                f"ONNX Runtime cannot open '{artifact.path}' ({first_line(e)}); the file is corrupt or "
                "truncated: export it again"
            ) from None
        names = [i.name for i in sess.get_inputs()]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            return sess.run(None, dict(zip(names, inputs)))

        return run

    @classmethod
    def open_plain(cls, path: str, threads: int) -> Call:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        feed = {inp.name: np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)}
        return lambda: sess.run(None, feed)
