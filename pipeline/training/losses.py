"""The latency term of the search loss, by the name users type (`--loss`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.registry import Registry

# (cross-entropy, expected latency in ms, options) -> total loss for the Θ step
LatencyLoss = Callable[[torch.Tensor, torch.Tensor, "LossOptions"], torch.Tensor]


@dataclass(frozen=True)
class LossOptions:
    lam: float = 0.1  # additive: weight per millisecond; log and target: weight of their term
    a: float = 0.2  # multiplicative: FBNet's defaults
    b: float = 0.6
    target_ms: float | None = None  # target: the latency the search aims at


LOSSES: Registry[LatencyLoss] = Registry("latency loss")


@LOSSES.register("add")
def additive(ce: torch.Tensor, lat_ms: torch.Tensor, o: LossOptions) -> torch.Tensor:
    """CE + λ·Lat, with Lat in milliseconds."""
    return ce + o.lam * lat_ms


@LOSSES.register("mul")
def multiplicative(ce: torch.Tensor, lat_ms: torch.Tensor, o: LossOptions) -> torch.Tensor:
    """FBNet: CE · a·(log Lat)^b, with Lat in microseconds.

    In microseconds every real latency is > 1, so log Lat > 0 and its fractional power is
    defined: in milliseconds a sub-millisecond network would give the log of a number < 1.
    """
    lat_us = torch.clamp(lat_ms * 1e3, min=1.0 + 1e-6)
    return ce * o.a * torch.log(lat_us) ** o.b


@LOSSES.register("log")
def logarithmic(ce: torch.Tensor, lat_ms: torch.Tensor, o: LossOptions) -> torch.Tensor:
    """CE + λ·ln Lat: a 10% faster network is worth 0.1·λ of cross-entropy on any device.

    The gradient λ/Lat is relative, so one λ means the same trade-off on a 5 ms desktop and a
    75 ms phone (λ·Lat in ms would not), and unlike FBNet's product it does not vanish as
    the cross-entropy goes to zero on easy data.
    """
    return ce + o.lam * torch.log(torch.clamp(lat_ms, min=1e-9))


@LOSSES.register("target")
def absolute_target(ce: torch.Tensor, lat_ms: torch.Tensor, o: LossOptions) -> torch.Tensor:
    """CE + λ·|Lat/T − 1| (TuNAS' absolute-value reward): pulls the expected latency to the target T.

    Unlike a one-sided penalty it also pushes up towards T when the architecture is faster
    than needed, where accuracy is left on the table. The derivation then keeps the most
    likely architecture within T (see `derive_within`).
    """
    assert o.target_ms is not None, "the target loss needs target_ms"
    return ce + o.lam * torch.abs(lat_ms / o.target_ms - 1.0)
