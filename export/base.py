"""The exporter interface every format implements, and the exporter registry."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from pipeline.config import build_config
from pipeline.registry import Registry


@dataclass(frozen=True)
class Artifact:
    """A file an exporter wrote, with what a runner needs to open and feed it."""

    path: Path
    format: str
    exporter: str
    input_shapes: tuple[tuple[int, ...], ...]


class Exporter(ABC):
    """Turns a plain `nn.Module` and example inputs into one file in the target's format."""

    name: ClassVar[str]
    format: ClassVar[str]
    suffix: ClassVar[str]
    Options: ClassVar[type]  # a frozen dataclass of this exporter's keyword options

    def __init__(self, **options: Any) -> None:
        # Unknown or ill-typed options fail here, naming the option, before any work starts.
        self.options = build_config(self.Options, options, f"{self.name} exporter options")

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the exported bytes: used as part of the artifact cache key."""
        return {"exporter": self.name, "versions": self.versions(), **dataclasses.asdict(self.options)}

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the converter packages, recorded in tables and cache keys."""

    @abstractmethod
    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Artifact:
        """Write `module` to `path` (atomically) and describe the result."""


EXPORTERS: Registry[type[Exporter]] = Registry("exporter")
