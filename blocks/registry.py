"""Candidate-block registry and named block sets.

A block is any `nn.Module` built by a constructor `(in_ch, out_ch, stride) -> nn.Module`.
Users add one with `register_block("name", constructor)` (in a plugin file passed with
`pipeline --plugin FILE`), then name it in a block set or a search-space file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from torch import nn

from core.errors import PipelineError
from core.fileio import read_config
from core.registry import Registry


class BlockConstructor(Protocol):
    def __call__(self, in_ch: int, out_ch: int, stride: int) -> nn.Module: ...


def any_shape(in_ch: int, out_ch: int, stride: int) -> bool:
    return True


@dataclass(frozen=True)
class BlockSpec:
    """A registered candidate: its constructor and which layer shapes it can fill."""

    name: str
    build: BlockConstructor
    # Some candidates only exist for some shapes (an identity needs stride 1 and equal
    # channels; a 2-group conv needs even channels). The space skips them elsewhere.
    supports: Callable[[int, int, int], bool] = any_shape
    description: str = ""


BLOCKS: Registry[BlockSpec] = Registry("block")
BLOCK_SETS: Registry[tuple[str, ...]] = Registry("block set")


def register_block(
    name: str,
    build: BlockConstructor,
    supports: Callable[[int, int, int], bool] = any_shape,
    description: str = "",
) -> BlockSpec:
    """Register a candidate block under the name users will type."""
    return BLOCKS.add(name, BlockSpec(name, build, supports, description))


def create_block(name: str, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    spec = BLOCKS.get(name)
    if not spec.supports(in_ch, out_ch, stride):
        raise PipelineError(
            f"block '{name}' cannot map {in_ch}->{out_ch} channels at stride {stride}; "
            "remove it from this layer's candidates"
        )
    return spec.build(in_ch, out_ch, stride)


def resolve_block_set(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A block set given as a registered name, a YAML/TOML file (`blocks: [...]`), or a list."""
    if isinstance(value, str):
        if value in BLOCK_SETS:
            names = BLOCK_SETS.get(value)
        elif Path(value).suffix in (".yaml", ".yml", ".toml", ".json"):
            data = read_config(value, "block-set file")
            names = data.get("blocks")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PipelineError(f"block-set file '{value}' needs a 'blocks' list of block names")
        else:
            BLOCK_SETS.get(value)  # raises with the valid names
            raise AssertionError("unreachable")
    else:
        names = value
    names = tuple(names)
    if not names:
        raise PipelineError("a block set needs at least one block")
    if len(set(names)) != len(names):
        raise PipelineError(f"block set lists a block twice: {', '.join(names)}")
    for n in names:
        BLOCKS.get(n)
    return names
