"""Exporters: one sibling module per format, registered by the name targets refer to.

The converters themselves (coremltools, executorch, litert-torch) are imported only when an
export runs, so listing targets or exporting ONNX never pays for them.
"""

from export import coreml as _coreml  # noqa: F401  (registers 'coreml')
from export import executorch as _executorch  # noqa: F401  (registers 'executorch')
from export import litert as _litert  # noqa: F401  (registers 'litert')
from export import onnx as _onnx  # noqa: F401  (registers 'onnx')
from export.base import EXPORTERS, Artifact, Exporter
from export.verify import CheckResult, Tolerance, check_against_torch

__all__ = ["EXPORTERS", "Artifact", "Exporter", "CheckResult", "Tolerance", "check_against_torch"]
