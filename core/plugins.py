"""User plugin files (Python that registers blocks, spaces or targets).

Loaded paths are remembered so that export worker processes load them too: a block a plugin
registers must exist wherever it is built.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from core.errors import PipelineError

LOADED: list[str] = []


def load_plugin(path: str) -> None:
    p = Path(path).resolve()
    if not p.is_file():
        raise PipelineError(f"plugin file '{path}' does not exist")
    if str(p) in LOADED:
        return
    spec = importlib.util.spec_from_file_location(f"pipeline_plugin_{p.stem}", p)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered as a module, so that what it defines pickles by name into worker processes
    # (which load the same plugin files before they unpickle anything).
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except PipelineError:
        del sys.modules[spec.name]
        raise
    except Exception as e:
        del sys.modules[spec.name]
        raise PipelineError(f"plugin '{path}' failed to load: {type(e).__name__}: {e}") from None
    LOADED.append(str(p))


def load_plugins(paths: list[str]) -> None:
    for p in paths:
        load_plugin(p)
