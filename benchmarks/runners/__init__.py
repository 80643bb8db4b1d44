"""Runners: one module per runtime, registered by name."""

from benchmarks.runners import onnxruntime as _onnxruntime  # noqa: F401  (registers 'onnxruntime')
from benchmarks.runners.base import RUNNERS, Run, Runner

__all__ = ["RUNNERS", "Run", "Runner"]
