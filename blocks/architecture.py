"""An architecture is data: one block name per layer, plus the space it belongs to."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from blocks.space import SearchSpace, space_from_dict
from core.errors import PipelineError
from core.fileio import read_json, write_json_atomic

ARCH_FORMAT = "pipeline-architecture"
ARCH_VERSION = 1


@dataclass(frozen=True)
class Architecture:
    space: SearchSpace
    blocks: tuple[str, ...]
    # Everything else (α table, predicted latency, which table, the search config) is
    # provenance: kept and shown, never needed to rebuild the network.
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_blocks(self.space, self.blocks, f"architecture for space '{self.space.name}'")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARCH_FORMAT, "version": ARCH_VERSION,
            "space_name": self.space.name, "space_fingerprint": self.space.fingerprint,
            "blocks": list(self.blocks), **self.info, "space": self.space.to_dict(),
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())


def validate_blocks(space: SearchSpace, blocks: tuple[str, ...], what: str) -> None:
    if len(blocks) != len(space.layers):
        raise PipelineError(
            f"{what} has {len(blocks)} layers but space '{space.name}' has {len(space.layers)}; "
            "use an architecture derived for this space"
        )
    for i, name in enumerate(blocks):
        if name not in space.candidates(i):
            raise PipelineError(
                f"{what}: layer {i} uses '{name}', which is not a candidate there "
                f"({', '.join(space.candidates(i))})"
            )


def load_architecture(path: str | os.PathLike, space: SearchSpace | None = None) -> Architecture:
    """Read an architecture file; with `space`, refuse one derived for another space."""
    data = read_json(path, "architecture file")
    if not isinstance(data, dict) or data.get("format") != ARCH_FORMAT:
        raise PipelineError(f"'{path}' is not an architecture file; pass one written by 'pipeline search'")
    if data.get("version") != ARCH_VERSION:
        raise PipelineError(
            f"architecture file '{path}' has format version {data.get('version')}, this tool reads "
            f"{ARCH_VERSION}; re-run 'pipeline search' with this version"
        )
    space_data, blocks = data.get("space"), data.get("blocks")
    if not (isinstance(space_data, dict) and isinstance(blocks, list) and all(isinstance(b, str) for b in blocks)):
        raise PipelineError(f"architecture file '{path}' lacks 'space' (a mapping) or 'blocks' (a list of block "
                            "names); it is damaged: pass one written by 'pipeline search'")
    own_space = space_from_dict(space_data, f"space in '{path}'")
    if space is not None and space.fingerprint != own_space.fingerprint:
        raise PipelineError(
            f"architecture file '{path}' is for space '{data.get('space_name')}' "
            f"(fingerprint {own_space.fingerprint}), not '{space.name}' ({space.fingerprint}); "
            f"pass --space {data.get('space_name')} or an architecture searched in '{space.name}'"
        )
    skip = {"format", "version", "space", "space_name", "space_fingerprint", "blocks"}
    info = {k: v for k, v in data.items() if k not in skip}
    return Architecture(space or own_space, tuple(blocks), info)


def random_architectures(space: SearchSpace, n: int, seed: int, exclude: set[str],
                         option: str = "--samples") -> list[tuple[str, ...]]:
    """`n` distinct uniformly random architectures whose keys (names joined by commas) are not in `exclude`."""
    rng = random.Random(seed)
    out: dict[str, tuple[str, ...]] = {}
    for _ in range(n * 50):
        if len(out) == n:
            break
        a = tuple(rng.choice(space.candidates(i)) for i in range(len(space.layers)))
        if ",".join(a) not in exclude:
            out.setdefault(",".join(a), a)
    if len(out) < n:
        raise PipelineError(f"space '{space.name}' has only {len(out)} architectures left to draw; ask for fewer with {option}")
    return list(out.values())
