"""Weights of a derived network, saved beside its architecture and loaded with weights_only=True."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.network import DerivedNet
from blocks.space import SearchSpace
from core.errors import PipelineError
from pipeline.training.checkpoint import load_torch, save_torch

WEIGHTS_FORMAT = "pipeline-weights"


@dataclass(frozen=True)
class SavedWeights:
    net: DerivedNet
    source: str  # "supernet" (inherited from the search) or "trained" (from scratch)
    test_accuracy: float | None


def save_weights(path: Path, net: DerivedNet, source: str, test_accuracy: float | None) -> None:
    payload = {
        "format": WEIGHTS_FORMAT, "version": 1, "space_fingerprint": net.space.fingerprint,
        "blocks": list(net.blocks), "num_classes": net.classifier[-1].out_features,
        "source": source, "test_accuracy": test_accuracy, "state_dict": net.state_dict(),
    }
    save_torch(path, payload)


def _read(path: Path, mmap: bool = False) -> dict[str, Any]:
    d = load_torch(path, "weights file", "retrain with 'pipeline train' or search again", mmap)
    if not isinstance(d, dict) or d.get("format") != WEIGHTS_FORMAT:
        raise PipelineError(f"'{path}' is not a weights file written by this tool")
    return d


def _check_owner(path: Path, d: dict[str, Any], space: SearchSpace, blocks: tuple[str, ...]) -> None:
    if d["space_fingerprint"] != space.fingerprint or tuple(d["blocks"]) != tuple(blocks):
        raise PipelineError(f"weights file '{path}' belongs to another architecture; retrain with 'pipeline train'")


def read_weights_info(path: Path, space: SearchSpace, blocks: tuple[str, ...]) -> dict[str, Any]:
    """A weights file's recorded fields (source, test_accuracy, ...) without reading its tensors.

    The tensors are memory-mapped and dropped, so this stays cheap for a large network.
    """
    d = _read(path, mmap=True)
    _check_owner(path, d, space, blocks)
    return {k: v for k, v in d.items() if k != "state_dict"}


def load_weights(path: Path, space: SearchSpace, blocks: tuple[str, ...]) -> SavedWeights:
    """Load weights saved for exactly this architecture; never unpickles arbitrary objects."""
    d = _read(path)
    _check_owner(path, d, space, blocks)
    net = DerivedNet(space, blocks, int(d["num_classes"]))
    net.load_state_dict(d["state_dict"])
    return SavedWeights(net.eval(), str(d["source"]), d.get("test_accuracy"))
