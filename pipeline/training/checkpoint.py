"""Search checkpoints: written atomically after every epoch (and on Ctrl-C), loaded with
weights_only=True, and refused when they belong to another space, table, config or version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core import __version__
from core.errors import PipelineError
from core.fileio import write_stream

CHECKPOINT_FORMAT = "pipeline-search-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, identity: dict[str, Any], state: dict[str, Any]) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "tool_version": __version__,
               "identity": identity, **state}
    save_torch(path, payload)


def save_torch(path: Path, payload: dict[str, Any]) -> None:
    """torch.save, atomically; a full or read-only disk is `storage_fault`'s one line, and the
    file that was there before stays whole."""
    write_stream(path, lambda f: torch.save(payload, f))


def load_torch(path: Path, what: str, fix: str, mmap: bool = False) -> Any:
    """torch.load with weights_only=True of a file this tool saved. Anything else given (random
    bytes, an empty or truncated file, another zip) is one PipelineError naming `what` and `fix`:
    torch's parser raises whatever its first wrong byte leads to (IndexError, EOFError,
    UnpicklingError, RuntimeError...), none of which is a bug here."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:  # what the OS said, not "corrupt"
        raise PipelineError(f"{what} '{path}' cannot be read ({e.strerror or type(e).__name__}); check the path "
                            "and its permissions") from None
    except Exception as e:
        raise PipelineError(f"{what} '{path}' is corrupt or not a {what} ({type(e).__name__}); {fix}") from None


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
    d = load_torch(path, "checkpoint", "delete it and run the search without --resume")
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
