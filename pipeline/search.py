"""The super-net search: W on the W split, Θ on the Θ split, after W-only warm-up epochs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import contextlib
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmarks.predict import LatencyModel
from blocks.mixing import MIXERS
from blocks.network import SuperNet
from blocks.space import SearchSpace
from pipeline.data import Splits
from pipeline.errors import PipelineError
from pipeline.losses import LOSSES, LossOptions
from pipeline.train import evaluate, loader


@dataclass(frozen=True)
class SearchConfig:
    epochs: int = 10
    warmup_epochs: int = 2  # W-only epochs before Θ starts moving
    batch_size: int = 64
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    # FBNet used Adam at lr 0.01 over ~10^4 Θ steps; a laptop-sized search takes ~10^2,
    # so the default is higher for Θ to move as far. Weight decay 5e-4 as in FBNet.
    theta_lr: float = 0.05
    theta_weight_decay: float = 5e-4
    loss: str = "mul"
    lam: float = 0.1
    a: float = 0.2
    b: float = 0.6
    mixing: str = "softmax"
    seed: int = 0
    device: str = "cpu"
    # Training input size; None = the space's. A smaller size is a proxy that makes a 224x224
    # space searchable on a CPU: the latency term still comes from the table, measured at the
    # space's own resolution, and the networks are fully convolutional.
    resolution: int | None = None

    def __post_init__(self) -> None:
        LOSSES.get(self.loss)
        MIXERS.get(self.mixing)
        if self.resolution is not None and self.resolution < 8:
            raise PipelineError(f"search: resolution {self.resolution} is too small; use 8 or more (or leave it unset)")
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise PipelineError(
                f"search: need epochs >= 1 and 0 <= warmup_epochs < epochs (got {self.epochs}, "
                f"{self.warmup_epochs}); Θ would never move otherwise"
            )
        if self.batch_size < 1 or self.w_lr <= 0 or self.theta_lr <= 0:
            raise PipelineError("search: batch_size must be >= 1 and learning rates > 0")
        if self.lam < 0 or self.a <= 0 or self.b <= 0:
            raise PipelineError("search: lam must be >= 0 and a, b > 0")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise PipelineError("search: --device cuda was asked for but no CUDA GPU is available; use --device cpu")

    @property
    def loss_options(self) -> LossOptions:
        return LossOptions(lam=self.lam, a=self.a, b=self.b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    supernet: SuperNet
    blocks: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    supernet_test_acc: float = 0.0

    def alpha_table(self) -> list[dict[str, float]]:
        return [
            {n: round(float(a), 6) for n, a in zip(layer.names, alpha)}
            for layer, alpha in zip(self.supernet.layers, (a.detach() for a in self.supernet.alphas()))
        ]


class _Searcher:
    """One search run's state: the super-net, its two optimisers and the latency model."""

    def __init__(self, space: SearchSpace, latency: LatencyModel, splits: Splits, cfg: SearchConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.latency, self.splits = cfg, latency, splits
        self.net = SuperNet(space, splits.num_classes, cfg.mixing).to(cfg.device)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=cfg.epochs)
        self.t_opt = torch.optim.Adam(self.net.arch_parameters(), lr=cfg.theta_lr, weight_decay=cfg.theta_weight_decay)
        self.w_data = loader(splits.w, cfg.batch_size, shuffle=True, seed=cfg.seed)
        self.t_data = loader(splits.theta, cfg.batch_size, shuffle=True, seed=cfg.seed + 1)
        self.loss_fn = LOSSES.get(cfg.loss)

    def w_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        # W sees cross-entropy only: the latency term does not depend on W, and in the
        # multiplicative form it would merely rescale W's learning rate as Θ moves.
        out = self.net(x)
        loss = F.cross_entropy(out, y)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.w_opt.step()
        return loss.item(), int((out.argmax(1) == y).sum())

    def theta_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        out = self.net(x)
        loss = self.loss_fn(F.cross_entropy(out, y), self.latency.expected(self.net.alphas()), self.cfg.loss_options)
        self.t_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.t_opt.step()
        return loss.item(), int((out.argmax(1) == y).sum())

    def _pass(self, data: DataLoader, step: Callable, name: str, epoch: int, progress: bool) -> tuple[float, float]:
        loss_sum = correct = n = 0.0
        for i, (x, y) in enumerate(tqdm(data, desc=f"epoch {epoch + 1} {name}", leave=False, disable=not progress)):
            x, y = x.to(self.cfg.device), y.to(self.cfg.device)
            loss, c = step(x, y)
            if not math.isfinite(loss):
                raise PipelineError(f"search diverged at epoch {epoch + 1}, {name} step {i + 1} (loss {loss}); "
                                    f"lower --{name.lower()}-lr")
            loss_sum += loss * len(y); correct += c; n += len(y)
        return loss_sum / n, correct / n

    def epoch(self, epoch: int, progress: bool) -> dict[str, Any]:
        """FBNet's alternation: one pass of W over the W split, then one of Θ over the Θ split."""
        self.net.train()
        w_loss, w_acc = self._pass(self.w_data, self.w_step, "W", epoch, progress)
        t_loss = t_acc = None
        if epoch >= self.cfg.warmup_epochs:
            # W needs no gradients in Θ's pass: skipping them saves about a third of the backward.
            with _frozen(self.net.weight_parameters()):
                t_loss, t_acc = self._pass(self.t_data, self.theta_step, "theta", epoch, progress)
        self.sched.step()
        with torch.no_grad():
            lat = float(self.latency.expected(self.net.alphas()))
        return {
            "epoch": epoch + 1, "theta_moved": t_loss is not None, "w_loss": w_loss, "w_acc": w_acc,
            "theta_loss": t_loss, "theta_acc": t_acc, "expected_latency_ms": lat,
            "derived_latency_ms": self.latency.predict(self.net.space, self.net.derive()),
        }


@contextlib.contextmanager
def _frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def run_search(space: SearchSpace, latency: LatencyModel, splits: Splits, cfg: SearchConfig,
               progress: bool = True) -> SearchResult:
    """Train the super-net against `latency` and derive argmax_j α_j^(l) in every layer."""
    s = _Searcher(space, latency, splits, cfg)
    history = []
    bar = tqdm(range(cfg.epochs), desc="search", unit="epoch", disable=not progress)
    for epoch in bar:
        h = s.epoch(epoch, progress)
        history.append(h)
        shown = {"loss": h["theta_loss"] if h["theta_loss"] is not None else h["w_loss"], "acc": h["w_acc"]}
        bar.set_postfix(loss=f"{shown['loss']:.3f}", acc=f"{shown['acc']:.3f}", lat=f"{h['expected_latency_ms']:.3f}ms")
        if progress:
            tqdm.write(
                f"epoch {h['epoch']:>3}  W loss {h['w_loss']:.3f}  W acc {h['w_acc']:.3f}  "
                + (f"Θ loss {h['theta_loss']:.3f}  Θ acc {h['theta_acc']:.3f}  " if h["theta_moved"] else "(W only)  ")
                + f"E[lat] {h['expected_latency_ms']:.4f} ms  argmax lat {h['derived_latency_ms']:.4f} ms"
            )
    acc = evaluate(s.net, splits.test, cfg.device)
    return SearchResult(s.net, s.net.derive(), history, acc)
