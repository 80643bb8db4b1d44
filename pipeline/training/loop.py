"""Training a plain network (the derived one, from scratch) and measuring held-out accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from blocks.network import DerivedNet
from blocks.space import SearchSpace
from pipeline.training.data import Splits
from core.errors import PipelineError

EVAL_BATCH = 256  # held-out accuracy is measured this many images at a time


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise PipelineError("train: epochs and batch_size must be >= 1 and lr > 0")


def fresh_network(space: SearchSpace, blocks: tuple[str, ...], num_classes: int, seed: int) -> DerivedNet:
    """The derived network with its initial weights drawn from `seed`: the same seed, the same start."""
    torch.manual_seed(seed)
    return DerivedNet(space, blocks, num_classes)


def loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g)


@torch.no_grad()
def evaluate(net: nn.Module, ds: Dataset, device: str = "cpu", batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy on `ds`, in eval mode."""
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y in loader(ds, batch_size, shuffle=False):
        correct += int((net(x.to(device)).argmax(1) == y.to(device)).sum())
        total += len(y)
    net.train(was_training)
    return correct / max(total, 1)


def train_network(net: nn.Module, splits: Splits, cfg: TrainConfig, progress: bool = True,
                  after_epoch: Callable[[int, nn.Module], None] | None = None) -> float:
    """Train from the current weights on W ∪ Θ (everything but the test split); return test
    accuracy. `after_epoch(epoch, net)` is called after each epoch (1-based), in train mode."""
    torch.manual_seed(cfg.seed)
    net.to(cfg.device).train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    data = loader(ConcatDataset([splits.w, splits.theta]), cfg.batch_size, shuffle=True, seed=cfg.seed)
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        total = correct = 0
        loss_sum = 0.0
        for x, y in data:
            x, y = x.to(cfg.device), y.to(cfg.device)
            out = net(x)
            loss = F.cross_entropy(out, y)
            if not torch.isfinite(loss):
                raise PipelineError("training diverged (loss is not finite); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
        sched.step()
        if after_epoch is not None:
            after_epoch(epoch + 1, net)
        bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
    return evaluate(net, splits.test, cfg.device)
