"""How a super-net layer combines its candidates in one step, by the name users type (`--mixing`).

- `softmax` (DARTS): every candidate runs, weighted by α = softmax(θ).
- `gumbel` (FBNet): every candidate runs, weighted by a Gumbel-softmax sample softmax((θ+g)/τ),
  with τ annealed each epoch; the latency term uses the same sample.
- `sampled` (ProxylessNAS' binarized paths): a W step runs one candidate drawn from α; a Θ step
  runs two, with a straight-through gate whose gradient is ProxylessNAS' estimator. Memory and
  time do not grow with the number of candidates.

Every random draw comes from the mixer's own generator, seeded by the search seed: every
process of a distributed run samples the same paths, and a checkpoint restores the draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from blocks.registry import create_block
from core.registry import Registry


class MixedLayer(nn.Module):
    """z = Σ_j α_j f_j(x): all candidates of one layer, each with its own weights, and θ.

    Which candidates run in a step, and with which weights, is the mixer's choice.
    """

    def __init__(self, names: tuple[str, ...], in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.names = names
        self.candidates = nn.ModuleList(create_block(n, in_ch, out_ch, stride) for n in names)
        # θ starts at zero: every candidate equally likely, as in DARTS and FBNet.
        self.theta = nn.Parameter(torch.zeros(len(names)))
        # What the mixer drew in the current step (a Gumbel sample, the sampled paths).
        self.sample: torch.Tensor | None = None
        self.sampled_idx: list[int] | None = None
        self.sampled_logsumexp = 0.0

    def run(self, x: torch.Tensor, idx: Iterable[int], weights: torch.Tensor) -> torch.Tensor:
        """Σ_k weights[k] · candidates[idx[k]](x)."""
        out = None
        for w, j in zip(weights, idx):
            y = w * self.candidates[j](x)
            out = y if out is None else out + y
        return out



@dataclass(frozen=True)
class MixingOptions:
    temperature: float = 5.0  # gumbel: τ at epoch 0 (FBNet)
    # gumbel: τ is multiplied by exp(-decay) every epoch. FBNet's 0.045 suits its 90 epochs; over
    # a 10-epoch search it leaves τ at 3.3, where every step still mixes all candidates. 0.3 takes
    # τ to 0.34, so the last epochs train nearly single paths and α ends decided; against random
    # networks as fast it ranked higher than 0.2 at 10 seeds (docs/search.md, "The default recipe").
    temperature_decay: float = 0.3
    paths: int = 2  # sampled: candidates a Θ step runs (ProxylessNAS: 2)


@dataclass(frozen=True)
class Recipe:
    """A strategy's default schedule, used where the search config leaves a value unset."""

    warmup_fraction: float  # share of the epochs in which only W moves
    theta_lr: float


class Mixer:
    """Base: the weighted sum over `idx` with `weights`, and per-epoch / per-step hooks."""

    # Softmax's Θ rate is higher than FBNet's 0.01: a laptop search takes ~10^2 Θ steps, not ~10^4.
    recipe = Recipe(warmup_fraction=0.2, theta_lr=0.05)
    runs_every_candidate = True

    def __init__(self, options: MixingOptions, seed: int) -> None:
        self.options = options
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.arch_step = False  # set by the searcher: True during Θ's pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, layer: MixedLayer, x: torch.Tensor, training: bool) -> torch.Tensor:
        return layer.run(x, range(len(layer.names)), torch.softmax(layer.theta, dim=-1))

    def latency_weights(self, layer: MixedLayer) -> torch.Tensor:
        """The weights Lat(Θ) gives this layer's candidates in the current step."""
        return torch.softmax(layer.theta, dim=-1)

    def after_theta_step(self, layers: list[MixedLayer]) -> None:
        """Called after every optimiser step of Θ."""

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])


MIXERS: Registry[type[Mixer]] = Registry("mixing strategy")


@MIXERS.register("softmax")
class SoftmaxMixer(Mixer):
    """DARTS' weighted sum: every candidate runs, weighted by α = softmax(θ)."""


@MIXERS.register("gumbel")
class GumbelMixer(Mixer):
    """FBNet: weights softmax((θ + g)/τ), g ~ Gumbel(0, 1) drawn per layer and step."""

    # FBNet started Θ after 10% of its epochs, Adam at lr 0.01, over ~10^4 Θ steps. A search here
    # takes ~10^2, and Adam's early steps are its largest: Θ waits for half the epochs, until the
    # super-net's accuracy has levelled off, so its first steps are not spent on a super-net that has
    # learned little; and it needs 0.1 to move far enough to decide (docs/search.md, "The default recipe").
    recipe = Recipe(warmup_fraction=0.5, theta_lr=0.1)

    @property
    def temperature(self) -> float:
        return self.options.temperature * math.exp(-self.options.temperature_decay * self.epoch)

    def forward(self, layer: MixedLayer, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not training:  # evaluation uses the distribution itself, not a sample of it
            return super().forward(layer, x, training)
        u = torch.rand(len(layer.names), generator=self.generator, dtype=torch.float64)
        g = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-12))).to(layer.theta.device, layer.theta.dtype)
        layer.sample = torch.softmax((layer.theta + g) / self.temperature, dim=-1)
        return layer.run(x, range(len(layer.names)), layer.sample)

    def latency_weights(self, layer: MixedLayer) -> torch.Tensor:
        # FBNet's Lat(a) uses the same mask as the forward pass of that step.
        return layer.sample if layer.sample is not None else super().latency_weights(layer)


@MIXERS.register("sampled")
class SampledMixer(Mixer):
    """ProxylessNAS' binarized paths: one candidate per W step, `paths` per Θ step."""

    runs_every_candidate = False

    def forward(self, layer: MixedLayer, x: torch.Tensor, training: bool) -> torch.Tensor:
        probs = torch.softmax(layer.theta.detach().float().cpu(), dim=-1)
        if not training:
            return layer.candidates[int(probs.argmax())](x)
        if not self.arch_step:
            # W moves along one path drawn from α; Θ gets no gradient from this step.
            j = int(torch.multinomial(probs, 1, generator=self.generator))
            return layer.candidates[j](x)
        k = min(self.options.paths, len(layer.names))
        idx = torch.multinomial(probs, k, replacement=False, generator=self.generator).tolist()
        p = torch.softmax(layer.theta[idx], dim=-1)
        chosen = int(torch.multinomial(p.detach().float().cpu(), 1, generator=self.generator))
        hard = torch.zeros_like(p)
        hard[chosen] = 1.0
        # Straight-through gate: forward is the chosen path alone; backward gives
        # ∂L/∂θ_i = Σ_j ∂L/∂g_j · p_j(δ_ij − p_i) over the sampled paths, ProxylessNAS' estimator.
        gate = hard - p.detach() + p
        layer.sampled_idx = idx
        layer.sampled_logsumexp = float(torch.logsumexp(layer.theta.detach()[idx], dim=0))
        return layer.run(x, idx, gate)

    def after_theta_step(self, layers: list[MixedLayer]) -> None:
        # ProxylessNAS: shift the sampled θs so their total probability mass is what it was, so
        # the paths that did not run keep their α apart from what the latency term moved.
        with torch.no_grad():
            for layer in layers:
                if layer.sampled_idx is None:
                    continue
                idx = layer.sampled_idx
                shift = layer.sampled_logsumexp - float(torch.logsumexp(layer.theta[idx], dim=0))
                layer.theta[idx] += shift
                layer.sampled_idx = None


def make_mixer(name: str, options: MixingOptions, seed: int) -> Mixer:
    return MIXERS.get(name)(options, seed)
