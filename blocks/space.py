"""Search spaces: a fixed stem, searchable stages of layers, a fixed head.

A space is data. It is registered by name or written in a YAML/TOML file and passed by path;
its `fingerprint` ties tables, architectures and checkpoints to the exact space they fit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from blocks.fbnet import conv_bn
from blocks.registry import BLOCKS, create_block, resolve_block_set
from pipeline.config import build_config
from pipeline.errors import PipelineError
from pipeline.fileio import read_config
from pipeline.registry import Registry


@dataclass(frozen=True)
class Stage:
    channels: int
    layers: int
    stride: int


@dataclass(frozen=True)
class LayerShape:
    """The shape a layer sees: what a latency-table row is keyed by (besides the block)."""

    in_ch: int
    out_ch: int
    stride: int
    height: int
    width: int

    @property
    def out_hw(self) -> tuple[int, int]:
        # Every conv here pads k // 2 with an odd kernel, so the output is ceil(size / stride).
        return (self.height - 1) // self.stride + 1, (self.width - 1) // self.stride + 1

    @property
    def key(self) -> str:
        return f"{self.in_ch}x{self.height}x{self.width}-{self.out_ch}-s{self.stride}"


# The fixed parts of every space, keyed by the row name they take in a latency table.
# The names follow ProxylessNAS/OFA tables (Conv, Conv_1, Logits) in meaning.
def _stem(s: LayerShape) -> nn.Module:
    return conv_bn(s.in_ch, s.out_ch, 3, s.stride)


def _head_conv(s: LayerShape) -> nn.Module:
    return conv_bn(s.in_ch, s.out_ch, 1)


def _classifier(s: LayerShape) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(s.in_ch, s.out_ch))


FIXED_PARTS = {"stem": _stem, "head_conv": _head_conv, "classifier": _classifier}


def build_part(name: str, shape: LayerShape) -> nn.Module:
    """Build a fixed part or a candidate block for one table row."""
    if name in FIXED_PARTS:
        return FIXED_PARTS[name](shape)
    return create_block(name, shape.in_ch, shape.out_ch, shape.stride)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    resolution: int
    stages: tuple[Stage, ...]
    blocks: tuple[str, ...]
    in_channels: int = 3
    num_classes: int = 1000
    stem_channels: int = 16
    stem_stride: int = 2
    head_channels: int = 1984
    description: str = ""
    _layers: tuple[LayerShape, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resolution < 1 or not self.stages:
            raise PipelineError(f"space '{self.name}' needs a positive resolution and >= 1 stage")
        h = (self.resolution - 1) // self.stem_stride + 1
        in_ch, shapes = self.stem_channels, []
        for st in self.stages:
            if st.channels < 1 or st.layers < 1 or st.stride not in (1, 2):
                raise PipelineError(f"space '{self.name}': bad stage {st}; stride must be 1 or 2")
            for i in range(st.layers):
                shape = LayerShape(in_ch, st.channels, st.stride if i == 0 else 1, h, h)
                shapes.append(shape)
                in_ch, h = st.channels, shape.out_hw[0]
        object.__setattr__(self, "_layers", tuple(shapes))
        for i in range(len(shapes)):
            if not self.candidates(i):
                raise PipelineError(f"space '{self.name}': no block of the set fits layer {i}")

    @property
    def layers(self) -> tuple[LayerShape, ...]:
        return self._layers

    def candidates(self, layer: int) -> tuple[str, ...]:
        s = self._layers[layer]
        return tuple(b for b in self.blocks if BLOCKS.get(b).supports(s.in_ch, s.out_ch, s.stride))

    def fixed_parts(self) -> list[tuple[str, LayerShape]]:
        last = self._layers[-1]
        fh, fw = last.out_hw
        r = self.resolution
        return [
            ("stem", LayerShape(self.in_channels, self.stem_channels, self.stem_stride, r, r)),
            ("head_conv", LayerShape(last.out_ch, self.head_channels, 1, fh, fw)),
            ("classifier", LayerShape(self.head_channels, self.num_classes, 1, fh, fw)),
        ]

    def size(self) -> int:
        n = 1
        for i in range(len(self._layers)):
            n *= len(self.candidates(i))
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_layers")
        d["stages"] = [[s.channels, s.layers, s.stride] for s in self.stages]
        d["blocks"] = list(self.blocks)
        return d

    @property
    def fingerprint(self) -> str:
        """Hash of everything that shapes the network (not its name or description)."""
        d = self.to_dict()
        d.pop("name"), d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


SPACES: Registry[SearchSpace] = Registry("search space")


def space_from_dict(data: dict[str, Any], what: str) -> SearchSpace:
    data = dict(data)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise PipelineError(f"{what}: 'stages' must be a list of [channels, layers, stride]")
    parsed = []
    for st in stages:
        if isinstance(st, dict):
            st = [st.get("channels"), st.get("layers"), st.get("stride")]
        if not (isinstance(st, list) and len(st) == 3 and all(isinstance(v, int) for v in st)):
            raise PipelineError(f"{what}: stage {st!r} must be [channels, layers, stride] integers")
        parsed.append(Stage(*st))
    data["stages"] = tuple(parsed)
    data["blocks"] = resolve_block_set(data.get("blocks", "fbnet"))
    data.setdefault("name", what)
    data.pop("_layers", None)
    return build_config(SearchSpace, data, what)


def resolve_space(value: str) -> SearchSpace:
    """A registered space name, or the path of a YAML/TOML space file."""
    if value in SPACES or Path(value).suffix not in (".yaml", ".yml", ".toml", ".json"):
        return SPACES.get(value)
    data = read_config(value, "search-space file")
    data.setdefault("name", Path(value).stem)
    return space_from_dict(data, f"search-space file '{value}'")


FBNET_STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))

SPACES.add("fbnet", SearchSpace(
    name="fbnet", resolution=224, stages=tuple(Stage(*s) for s in FBNET_STAGES),
    blocks=resolve_block_set("fbnet"), in_channels=3, num_classes=1000,
    stem_channels=16, stem_stride=2, head_channels=1984,
    description="FBNet's ImageNet macro-architecture: 22 searchable layers at 224x224",
))

SPACES.add("tiny", SearchSpace(
    name="tiny", resolution=32, stages=(Stage(16, 1, 1), Stage(24, 2, 2), Stage(32, 2, 2), Stage(64, 1, 2)),
    blocks=resolve_block_set("fbnet"), in_channels=1, num_classes=10,
    stem_channels=16, stem_stride=2, head_channels=256,
    description="FBNet's blocks on a 6-layer macro sized for the embedded digits data (32x32, 1 channel)",
))
