"""FBNet's candidate blocks (Wu et al., CVPR 2019, Fig. 3 and Table 2)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from blocks.registry import BLOCK_SETS, any_shape, register_block


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle, written at rank 5 (Core ML rejects rank > 5)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n, self.groups, c // self.groups, h, w)
        return x.transpose(1, 2).reshape(n, c, h, w)


def conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FBNetBlock(nn.Module):
    """1x1 group conv -> BN -> ReLU -> [shuffle] -> kxk depthwise (stride) -> BN -> ReLU
    -> 1x1 group conv -> BN, plus a residual when stride is 1 and channels are unchanged."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, *, kernel: int, expansion: int, groups: int = 1
    ) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.kernel, self.expansion, self.groups = kernel, expansion, groups
        self.expand = conv_bn(in_ch, mid, 1, groups=groups)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, out_ch, 1, groups=groups, relu=False)
        self.residual = stride == 1 and in_ch == out_ch

    @property
    def config(self) -> dict[str, Any]:
        return {
            "type": "fbnet", "in_ch": self.in_ch, "out_ch": self.out_ch, "stride": self.stride,
            "kernel": self.kernel, "expansion": self.expansion, "groups": self.groups,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.shuffle(self.expand(x))))
        return x + y if self.residual else y


class Skip(nn.Module):
    """FBNet's `skip`: the identity, or a 1x1 conv + BN where the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        identity = stride == 1 and in_ch == out_ch
        self.op = nn.Identity() if identity else conv_bn(in_ch, out_ch, 1, stride, relu=False)

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "skip", "in_ch": self.in_ch, "out_ch": self.out_ch, "stride": self.stride}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _even_channels(in_ch: int, out_ch: int, stride: int) -> bool:
    return in_ch % 2 == 0 and out_ch % 2 == 0


# Index order as public FBNet benchmarks use it (docs/reference.md).
FBNET_BLOCKS = (
    ("k3_e1", 3, 1, 1), ("k3_e1_g2", 3, 1, 2), ("k3_e3", 3, 3, 1), ("k3_e6", 3, 6, 1),
    ("k5_e1", 5, 1, 1), ("k5_e1_g2", 5, 1, 2), ("k5_e3", 5, 3, 1), ("k5_e6", 5, 6, 1),
)

for _name, _k, _e, _g in FBNET_BLOCKS:
    register_block(
        _name,
        partial(FBNetBlock, kernel=_k, expansion=_e, groups=_g),
        supports=_even_channels if _g == 2 else any_shape,
        description=f"inverted residual, kernel {_k}, expansion {_e}, groups {_g}",
    )
register_block("skip", Skip, description="identity, or 1x1 conv + BN where the shape changes")

BLOCK_SETS.add("fbnet", tuple(n for n, *_ in FBNET_BLOCKS) + ("skip",))
