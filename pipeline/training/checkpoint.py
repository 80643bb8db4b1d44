"""Search checkpoints: written atomically after every epoch (and on Ctrl-C), loaded with
weights_only=True, and refused when they belong to another space, table, config or version."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from core import __version__
from core.errors import PipelineError
from core.fileio import write_with

CHECKPOINT_FORMAT = "pipeline-search-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, identity: dict[str, Any], state: dict[str, Any]) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "tool_version": __version__,
               "identity": identity, **state}
    write_with(path, lambda tmp: torch.save(payload, tmp))


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} there, {b!r} now")
    return out


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's state, if it was written by this version for exactly this search."""
    if not path.is_file():
        raise PipelineError(f"--resume: no checkpoint at '{path}'; run the search without --resume to start one")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise PipelineError(f"checkpoint '{path}' is corrupt or not a checkpoint ({type(e).__name__}); "
                            "delete it and run the search without --resume") from None
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise PipelineError(f"'{path}' is not a search checkpoint written by this tool; "
                            "delete it and run the search without --resume")
    if d.get("version") != CHECKPOINT_VERSION or d.get("tool_version") != __version__:
        raise PipelineError(f"checkpoint '{path}' was written by pipeline {d.get('tool_version')} (checkpoint "
                            f"format {d.get('version')}), this is {__version__} (format {CHECKPOINT_VERSION}); "
                            "search again without --resume")
    diff = _differences(d.get("identity", {}), identity)
    if diff:
        raise PipelineError(f"checkpoint '{path}' belongs to another search ({'; '.join(diff[:3])}"
                            f"{'; ...' if len(diff) > 3 else ''}); use the same space, table and options, "
                            "or search again without --resume")
    return d
