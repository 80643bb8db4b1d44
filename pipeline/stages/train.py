"""The train stage: a derived network trained from scratch (FBNet's practice), its weights
saved beside the architecture."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blocks.architecture import load_architecture
from blocks.space import SearchSpace
from core.workspace import weights_path
from pipeline.training.data import Splits
from pipeline.training.loop import TrainConfig, fresh_network, train_network
from pipeline.training.weights import save_weights


@dataclass(frozen=True)
class TrainReport:
    path: Path
    test_accuracy: float


def train(arch_path: Path, splits: Splits, cfg: TrainConfig, space: SearchSpace | None = None,
          progress: bool = True) -> TrainReport:
    """Train the derived network from scratch (FBNet's practice) and save it beside the architecture."""
    arch = load_architecture(arch_path, space)
    net = fresh_network(arch.space, arch.blocks, splits.num_classes, cfg.seed)
    acc = train_network(net, splits, cfg, progress)
    out = weights_path(arch_path, "trained")
    save_weights(out, net.cpu(), "trained", acc)
    return TrainReport(out, acc)


