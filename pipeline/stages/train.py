"""The train stage: a derived network trained from scratch (FBNet's practice), its weights
saved beside the architecture."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks import resolve_space
from blocks.architecture import load_architecture
from blocks.space import SearchSpace
from core.workspace import Workspace, weights_path
from pipeline.training.data import Splits, load_data, searched_source
from pipeline.training.loop import TrainConfig, fresh_network, train_network
from pipeline.training.weights import save_weights


@dataclass(frozen=True)
class TrainReport:
    path: Path
    test_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """`train --json`: the weights written and their held-out test accuracy."""
        return {"weights": str(self.path), "test_accuracy": self.test_accuracy}


def train(arch_path: Path, splits: Splits, cfg: TrainConfig, space: SearchSpace | None = None,
          progress: bool = True) -> TrainReport:
    """Train the derived network from scratch (FBNet's practice) and save it beside the architecture."""
    arch = load_architecture(arch_path, space)
    net = fresh_network(arch.space, arch.blocks, splits.num_classes, cfg.seed)
    acc = train_network(net, splits, cfg, progress)
    out = weights_path(arch_path, "trained")
    save_weights(out, net.cpu(), "trained", acc)
    return TrainReport(out, acc)


def locate(ws: Workspace, space_name: str, target: str, device: str, arch: Path | None = None,
           space_given: bool = True) -> tuple[Path, SearchSpace | None]:
    """The architecture a train or export command means, and the space to check it against:
    the workspace's for (space, target, device), or an explicit file, which brings its own
    space (checked against `space_name` only if the user gave one)."""
    space = resolve_space(space_name)
    if arch is not None:
        return arch, space if space_given else None
    return ws.architecture(space.name, target, device), space


def train_derived(arch_path: Path, space: SearchSpace | None, data: str | None, cfg: TrainConfig,
                  progress: bool = True) -> TrainReport:
    """`pipeline train`: load `data` (None: the search's) as the search saw it and train the
    architecture from scratch."""
    a = load_architecture(arch_path, space)
    data = searched_source(a.info, data)
    # Train at the size the search trained at (a proxy resolution, if it used one).
    resolution = (a.info.get("search") or {}).get("resolution") or a.space.resolution
    splits = load_data(data, resolution, a.space.in_channels, cfg.seed)
    return train(arch_path, splits, cfg, a.space, progress)
