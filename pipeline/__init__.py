"""Hardware-aware differentiable architecture search (FBNet-style): benchmark, search, export.

The Python API is the stages themselves, loaded on first use so that importing a low layer
(or `pipeline.training`) never pulls in the stages and their converters:

    from pipeline import benchmark, search, train, export, validate, compare, run
"""

from __future__ import annotations

import importlib
from typing import Any

from core import __version__

# name -> (module, attribute): the facade's whole surface
_API = {
    "benchmark": ("pipeline.stages.benchmark", "benchmark"),
    "import_table": ("pipeline.stages.benchmark", "import_table"),
    "bundle_blocks": ("pipeline.stages.benchmark", "bundle_blocks"),
    "search": ("pipeline.stages.search", "search"),
    "sweep_search": ("pipeline.stages.search", "sweep_search"),
    "train": ("pipeline.stages.train", "train"),
    "export": ("pipeline.stages.export", "export"),
    "validate": ("pipeline.stages.validate", "validate"),
    "compare": ("pipeline.stages.compare", "compare"),
    "run": ("pipeline.flow", "run"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'pipeline' has no attribute '{name}'")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
