"""Runners: one module per runtime, registered by name. Runtimes import on first use."""

from benchmarks.runners import coreml as _coreml  # noqa: F401  (registers 'coreml')
from benchmarks.runners import executorch as _executorch  # noqa: F401  ('executorch', 'executorch-coreml')
from benchmarks.runners import litert as _litert  # noqa: F401  (registers 'litert')
from benchmarks.runners import onnxruntime as _onnxruntime  # noqa: F401  (registers 'onnxruntime')
from benchmarks.runners.base import RUNNERS, Call, DeviceTool, Run, Runner

__all__ = ["RUNNERS", "Call", "DeviceTool", "Run", "Runner"]
