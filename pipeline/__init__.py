"""Hardware-aware differentiable architecture search (FBNet-style): benchmark, search, export.

The Python API (`pipeline.api`) by the names users type, loaded on first use so that
importing a low layer (or `pipeline.training`) never pulls in the stages and converters:

    from pipeline import benchmark, search, train, export, validate, compare, run
"""

from __future__ import annotations

import importlib
from typing import Any

from core import __version__

_API = ("benchmark", "import_table", "search", "train", "export", "validate", "compare", "run")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'pipeline' has no attribute '{name}'")
    value = getattr(importlib.import_module("pipeline.api"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
