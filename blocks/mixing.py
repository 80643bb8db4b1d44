"""How a super-net layer turns its logits θ into mixing weights α, by the name users type."""

from __future__ import annotations

from typing import Callable

import torch

from pipeline.registry import Registry

# A mixer maps one layer's θ (shape [candidates]) to the weights its candidates' outputs get.
Mixer = Callable[[torch.Tensor], torch.Tensor]

MIXERS: Registry[Mixer] = Registry("mixing strategy")


@MIXERS.register("softmax")
def softmax_mix(theta: torch.Tensor) -> torch.Tensor:
    """DARTS' weighted sum: every candidate runs, weighted by α = softmax(θ)."""
    return torch.softmax(theta, dim=-1)
