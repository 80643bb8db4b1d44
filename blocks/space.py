"""Search spaces: a fixed stem, searchable stages of layers, a fixed head.

A space is data. It is registered by name or written in a YAML/TOML file and passed by path;
its `fingerprint` ties tables, architectures and checkpoints to the exact space they fit.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainValidator
from pydantic_core import PydanticCustomError
from torch import nn

from blocks.fbnet import conv_bn
from blocks.mbconv import mb_name, ofa_set
from blocks.registry import BLOCKS, create_block, resolve_block_set
from core.config import (CHANNELS, CLASSES, IMAGE_CHANNELS, LAYERS, MAX_ACTIVATION, RESOLUTION, STAGES, STRIDES, Input,
                         int_in, one_of, validate)
from core.errors import PipelineError
from core.fileio import read_config
from core.registry import Registry


@dataclass(frozen=True)
class Stage:
    channels: int
    layers: int
    stride: int
    # A stage may fix its own candidates (a single block makes a fixed layer, like
    # ProxylessNAS's first MBConv); None takes the space's block set.
    blocks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.blocks is not None:
            object.__setattr__(self, "blocks", resolve_block_set(tuple(self.blocks)))

    def to_data(self) -> list[int] | dict[str, Any]:
        """The list form `[channels, layers, stride]`, or a mapping where the stage fixes its blocks."""
        if self.blocks is None:
            return [self.channels, self.layers, self.stride]
        return {"channels": self.channels, "layers": self.layers, "stride": self.stride, "blocks": list(self.blocks)}


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

    @classmethod
    def from_key(cls, key: str) -> "LayerShape":
        """The shape `key` names (`16x8x8-16-s1`); ValueError if it names none."""
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+)-(\d+)-s(\d+)", key)
        if m is None:
            raise ValueError(f"'{key}' is not a layer shape (CINxHxW-COUT-sSTRIDE)")
        c, h, w, o, st = (int(g) for g in m.groups())
        return cls(c, o, st, h, w)


# The fixed parts of every space, keyed by the row name they take in a latency table.
# The names follow ProxylessNAS/OFA tables (Conv, Conv_1, Logits) in meaning.
def _stem(s: LayerShape) -> nn.Module:
    return conv_bn(s.in_ch, s.out_ch, 3, s.stride)


def _head_conv(s: LayerShape) -> nn.Module:
    return conv_bn(s.in_ch, s.out_ch, 1)


def _feature_mix(s: LayerShape) -> nn.Module:
    # MobileNetV3's last 1x1 conv, after the pooling (Once-for-All's `Conv_2`). No BN, as in
    # Once-for-All: it sees a 1x1 map, where batch statistics of one image are undefined.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(s.in_ch, s.out_ch, 1, bias=False), nn.Hardswish())


def _classifier(s: LayerShape) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(s.in_ch, s.out_ch))


FIXED_PARTS = {"stem": _stem, "head_conv": _head_conv, "feature_mix": _feature_mix, "classifier": _classifier}


def build_part(name: str, shape: LayerShape) -> nn.Module:
    """Build a fixed part or a candidate block for one table row."""
    if name in FIXED_PARTS:
        return FIXED_PARTS[name](shape)
    return create_block(name, shape.in_ch, shape.out_ch, shape.stride)


def _refuse_huge(name: str, maps: list[tuple[int, int]]) -> None:
    """Refuse a space where a layer's input or output map (channels x side², the wider of the two at
    the input's size) is past MAX_ACTIVATION values, before anything is allocated for it."""
    for channels, side in maps:
        if channels * side * side > MAX_ACTIVATION:
            raise PipelineError(f"space '{name}': a {channels}x{side}x{side} feature map holds "
                                f"{channels * side * side:,} values, over the {MAX_ACTIVATION:,} any device here runs; "
                                "lower the resolution or the channels")


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
    # > 0: pool, then a 1x1 conv to this width before the classifier (MobileNetV3); 0: none.
    feature_mix_channels: int = 0
    description: str = ""
    _layers: tuple[LayerShape, ...] = field(init=False, repr=False, compare=False)
    _stage_of: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resolution < 1 or not self.stages or self.stem_stride not in STRIDES:
            raise PipelineError(f"space '{self.name}' needs a positive resolution, >= 1 stage and a stem stride of 1 or 2")
        h = (self.resolution - 1) // self.stem_stride + 1
        in_ch, shapes, stage_of = self.stem_channels, [], []
        for j, st in enumerate(self.stages):
            for name, value, ok in (("channels", st.channels, st.channels >= 1), ("layers", st.layers, st.layers >= 1),
                                    ("stride", st.stride, st.stride in STRIDES)):
                if not ok:
                    raise PipelineError(f"space '{self.name}': stage {j} has {name} {value}; "
                                        f"{'stride must be 1 or 2' if name == 'stride' else f'{name} must be >= 1'}")
            for i in range(st.layers):
                shape = LayerShape(in_ch, st.channels, st.stride if i == 0 else 1, h, h)
                shapes.append(shape)
                stage_of.append(j)
                in_ch, h = st.channels, shape.out_hw[0]
        _refuse_huge(self.name, [(self.in_channels, self.resolution)]
                     + [(max(s.in_ch, s.out_ch), s.height) for s in shapes])
        object.__setattr__(self, "_layers", tuple(shapes))
        object.__setattr__(self, "_stage_of", tuple(stage_of))
        for i in range(len(shapes)):
            if not self.candidates(i):
                raise PipelineError(f"space '{self.name}': no block of the set fits layer {i}")

    @property
    def layers(self) -> tuple[LayerShape, ...]:
        return self._layers

    def candidates(self, layer: int) -> tuple[str, ...]:
        s = self._layers[layer]
        names = self.stages[self._stage_of[layer]].blocks or self.blocks
        return tuple(b for b in names if BLOCKS.get(b).supports(s.in_ch, s.out_ch, s.stride))

    def fixed_parts(self) -> list[tuple[str, LayerShape]]:
        last = self._layers[-1]
        fh, fw = last.out_hw
        r = self.resolution
        parts = [
            ("stem", LayerShape(self.in_channels, self.stem_channels, self.stem_stride, r, r)),
            ("head_conv", LayerShape(last.out_ch, self.head_channels, 1, fh, fw)),
        ]
        if not self.feature_mix_channels:
            return parts + [("classifier", LayerShape(self.head_channels, self.num_classes, 1, fh, fw))]
        return parts + [
            ("feature_mix", LayerShape(self.head_channels, self.feature_mix_channels, 1, fh, fw)),
            ("classifier", LayerShape(self.feature_mix_channels, self.num_classes, 1, 1, 1)),
        ]

    def size(self) -> int:
        n = 1
        for i in range(len(self._layers)):
            n *= len(self.candidates(i))
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_layers"), d.pop("_stage_of")
        d["stages"] = [s.to_data() for s in self.stages]
        d["blocks"] = list(self.blocks)
        if not self.feature_mix_channels:
            d.pop("feature_mix_channels")  # absent, so spaces without one keep their fingerprints
        return d

    @property
    def fingerprint(self) -> str:
        """Hash of everything that shapes the network (not its name or description)."""
        d = self.to_dict()
        d.pop("name"), d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


SPACES: Registry[SearchSpace] = Registry("search space")


def _block_set_value(v: Any) -> str | list[str]:
    if isinstance(v, str) or isinstance(v, list) and 0 < len(v) <= 1024 and all(isinstance(b, str) for b in v):
        return v
    raise PydanticCustomError("block_set", "a block-set name or a list of block names")


BlockSetValue = Annotated[Any, PlainValidator(_block_set_value)]


def _stage_form(v: Any) -> Any:
    """The list form `[channels, layers, stride]` as the mapping form, so both are checked alike."""
    if isinstance(v, list) and len(v) == 3:
        return dict(zip(("channels", "layers", "stride"), v))
    if isinstance(v, dict):
        return v
    raise PydanticCustomError("stage", "[channels, layers, stride] integers or {channels, layers, stride, blocks}")


class StageInput(Input):
    channels: int_in(*CHANNELS)  # type: ignore[valid-type]
    layers: int_in(*LAYERS)  # type: ignore[valid-type]
    stride: one_of(*STRIDES)  # type: ignore[valid-type]
    # a block-set name or a list of block names: the stage fixes its own candidates
    blocks: BlockSetValue | None = None


class SpaceInput(Input):
    """A search-space file. Fields left out take `SearchSpace`'s defaults."""

    name: str
    description: str | None = None
    resolution: int_in(*RESOLUTION)  # type: ignore[valid-type]
    stages: Annotated[list[Annotated[StageInput, BeforeValidator(_stage_form)]], Field(min_length=STAGES[0],
                                                                                      max_length=STAGES[1])]
    blocks: BlockSetValue | None = None
    in_channels: int_in(*IMAGE_CHANNELS) | None = None  # type: ignore[valid-type]
    num_classes: int_in(*CLASSES) | None = None  # type: ignore[valid-type]
    stem_channels: int_in(*CHANNELS) | None = None  # type: ignore[valid-type]
    stem_stride: one_of(*STRIDES) | None = None  # type: ignore[valid-type]
    head_channels: int_in(*CHANNELS) | None = None  # type: ignore[valid-type]
    feature_mix_channels: int_in(0, CHANNELS[1]) | None = None  # type: ignore[valid-type]


SPACE_FIX = "fix it in the space file ('pipeline spaces' lists the built-in spaces to copy from)"


def _blocks_in(value: str | list[str], field: str, what: str) -> tuple[str, ...]:
    try:
        return resolve_block_set(value)
    except PipelineError as e:
        raise PipelineError(f"{what}: {field}: {e}") from None


def space_from_dict(data: dict[str, Any], what: str) -> SearchSpace:
    """A space from a file's mapping (or `SearchSpace.to_dict`); a bad value is one line naming its field."""
    data = {k: v for k, v in data.items() if k not in ("_layers", "_stage_of")}
    data.setdefault("name", what)
    m = validate(SpaceInput, data, what, SPACE_FIX)
    stages = tuple(Stage(st.channels, st.layers, st.stride,
                         None if st.blocks is None else _blocks_in(st.blocks, f"stages.{i}.blocks", what))
                   for i, st in enumerate(m.stages))
    given = {k: getattr(m, k) for k in m.model_fields_set if getattr(m, k) is not None}
    given.update(stages=stages, blocks=_blocks_in(m.blocks if m.blocks is not None else "fbnet", "blocks", what))
    try:
        return SearchSpace(**given)
    except PipelineError as e:  # the space as a whole (sizes, candidates): name the file too
        raise PipelineError(f"{what}: {e}") from None


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

# ProxylessNAS's mobile space (REFERENCE.md): a fixed MBConv e1 to 16 channels, then 21 layers
# of MBConv k3/5/7 x e3/6 or a skip where the shape allows. Its stage widths are those of its
# published Pixel 1 table; the stem and head use ReLU6 there and ReLU here (same table rows).
PROXYLESS_STAGES = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))

SPACES.add("proxyless", SearchSpace(
    name="proxyless", resolution=224,
    stages=(Stage(16, 1, 1, blocks=(mb_name(3, 1),)),) + tuple(Stage(*s) for s in PROXYLESS_STAGES),
    blocks=resolve_block_set("proxyless"), in_channels=3, num_classes=1000,
    stem_channels=32, stem_stride=2, head_channels=1280,
    description="ProxylessNAS's mobile space: MBConv k3/5/7 x e3/6 or skip on MobileNetV2's macro at 224x224",
))


def _ofa_stages() -> tuple[Stage, ...]:
    """Once-for-All's MobileNetV3 (width 1.2): per stage (channels, stride, SE, h-swish). Its stem
    and head conv use h-swish, ReLU here: the activation does not change what their rows time.

    Elastic depth 2-4 is written as two stages of two layers: the first pair always runs, the
    second pair may be skipped. (Skipping layer 3 but not 4 builds the same network as the
    reverse, so `size()` counts such networks twice.)
    """
    stages = [Stage(24, 1, 1, blocks=(mb_name(3, 1),))]
    for channels, stride, se, hswish in ((32, 2, False, False), (48, 2, True, False), (96, 2, False, True),
                                         (136, 1, True, True), (192, 2, True, True)):
        cands = ofa_set(se, hswish)
        stages += [Stage(channels, 2, stride, blocks=cands), Stage(channels, 2, 1, blocks=cands + ("identity",))]
    return tuple(stages)


def _union(stages: tuple[Stage, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(b for st in stages for b in st.blocks or ()))


SPACES.add("ofa", SearchSpace(
    name="ofa", resolution=224, stages=_ofa_stages(), blocks=_union(_ofa_stages()),
    in_channels=3, num_classes=1000, stem_channels=24, stem_stride=2,
    head_channels=1152, feature_mix_channels=1536,
    description="Once-for-All's MobileNetV3 space (width 1.2, its Note10 tables): MBConv k3/5/7 x e3/4/6, "
                "SE and h-swish per stage, depth 2-4 per stage, at 224x224",
))
