"""Exporters: one sibling module per format, registered by the name targets refer to."""

from export import onnx as _onnx  # noqa: F401  (registers 'onnx')
from export.base import EXPORTERS, Artifact, Exporter
from export.verify import CheckResult, Tolerance, check_against_torch

__all__ = ["EXPORTERS", "Artifact", "Exporter", "CheckResult", "Tolerance", "check_against_torch"]
