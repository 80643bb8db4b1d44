"""MobileNetV2/V3 inverted residuals (MBConv) as ProxylessNAS and Once-for-All search them.

Names follow the published lookup-table keys, so a key maps to a block by its fields alone:
`mb_k{kernel}_e{expansion}`, plus `_se` (squeeze-and-excitation) and `_hs` (h-swish) where the
Once-for-All key says `se:1` / `hs:1`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from blocks.registry import BLOCK_SETS, register_block

ACTIVATIONS = {"relu6": partial(nn.ReLU6, inplace=True), "hswish": partial(nn.Hardswish, inplace=True)}


def conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                act: str | None = "relu6") -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def _divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: nearest multiple of `divisor`, never below 90% of `v`."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class SqueezeExcite(nn.Module):
    """MobileNetV3's SE as Once-for-All builds it: pool -> 1x1 (mid/4) -> ReLU -> 1x1 -> h-sigmoid."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = _divisible(channels / reduction)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Hardsigmoid(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class MBConv(nn.Module):
    """[1x1 conv -> BN -> act, when expansion > 1] -> kxk depthwise (stride) -> BN -> act
    -> [SE] -> 1x1 conv -> BN, plus a residual when stride is 1 and channels are unchanged.

    ProxylessNAS uses ReLU6 throughout; Once-for-All's MobileNetV3 uses ReLU or h-swish. ReLU6
    stands in for ReLU here: the activation's type does not change what a table row times.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, kernel: int, expansion: int,
                 se: bool = False, act: str = "relu6") -> None:
        super().__init__()
        mid = in_ch * expansion
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.kernel, self.expansion, self.se, self.act = kernel, expansion, se, act
        # MobileNetV2 drops the expansion conv when it would be a 1x1 of the same width.
        self.expand = conv_bn_act(in_ch, mid, 1, act=act) if expansion > 1 else nn.Identity()
        self.depthwise = conv_bn_act(mid, mid, kernel, stride, groups=mid, act=act)
        self.excite = SqueezeExcite(mid) if se else nn.Identity()
        self.project = conv_bn_act(mid, out_ch, 1, act=None)
        self.residual = stride == 1 and in_ch == out_ch

    @property
    def config(self) -> dict[str, Any]:
        return {
            "type": "mbconv", "in_ch": self.in_ch, "out_ch": self.out_ch, "stride": self.stride,
            "kernel": self.kernel, "expansion": self.expansion, "se": self.se, "act": self.act,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.excite(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class Identity(nn.Identity):
    """A skipped layer (ProxylessNAS's zero op, Once-for-All's elastic depth): it only exists
    where the shape is kept, and takes no time, so latency tables have no key for it."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "identity", "in_ch": self.in_ch, "out_ch": self.out_ch, "stride": self.stride}


def shape_kept(in_ch: int, out_ch: int, stride: int) -> bool:
    return stride == 1 and in_ch == out_ch


def mb_name(kernel: int, expansion: int, se: bool = False, hswish: bool = False) -> str:
    """The block name a lookup-table key's kernel/expansion/se/hs fields map to."""
    return f"mb_k{kernel}_e{expansion}" + ("_se" if se else "") + ("_hs" if hswish else "")


def _register(kernel: int, expansion: int, se: bool = False, hswish: bool = False) -> str:
    name = mb_name(kernel, expansion, se, hswish)
    act = "hswish" if hswish else "relu6"
    extras = "".join([", squeeze-excite" if se else "", ", h-swish" if hswish else ""])
    register_block(
        name, partial(MBConv, kernel=kernel, expansion=expansion, se=se, act=act),
        description=f"MBConv, kernel {kernel}, expansion {expansion}{extras}",
    )
    return name


KERNELS = (3, 5, 7)
# MobileNetV3's four (se, h-swish) flavours; Once-for-All fixes one per stage.
FLAVOURS = ((False, False), (True, False), (False, True), (True, True))

_register(3, 1)  # ProxylessNAS's and Once-for-All's fixed first block
for _se, _hs in FLAVOURS:
    for _k in KERNELS:
        for _e in (3, 4, 6):
            _register(_k, _e, _se, _hs)
register_block("identity", Identity, supports=shape_kept,
               description="skip the layer (only where the shape is kept; takes no time)")

BLOCK_SETS.add("proxyless", tuple(mb_name(k, e) for k in KERNELS for e in (3, 6)) + ("identity",))


def ofa_set(se: bool, hswish: bool) -> tuple[str, ...]:
    """One Once-for-All stage's candidates: k x e of that stage's flavour (identity is added
    by the space where elastic depth allows a skip)."""
    return tuple(mb_name(k, e, se, hswish) for k in KERNELS for e in (3, 4, 6))
