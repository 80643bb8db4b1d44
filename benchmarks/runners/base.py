"""The runner interface: open an artifact on this machine and run it (`benchmarks.protocol.measure`
times the loaded run; `benchmarks.isolate` decides in which process)."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np

from export.base import Artifact, missing_modules
from core.config import build_config
from core.errors import PlatformUnsupported
from core.registry import Registry

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


class Runner(ABC):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]  # the package whose version a table records
    Options: ClassVar[type]
    modules: ClassVar[tuple[str, ...]] = ()  # Python modules the runtime needs
    # sys.platform prefixes where the runtime exists (None: everywhere its package installs).
    platforms: ClassVar[tuple[str, ...] | None] = None
    platform_note: ClassVar[str] = ""  # what to do elsewhere

    def __init__(self, threads: int = 1, **options: Any) -> None:
        self.threads = threads
        self.options = build_config(self.Options, options, f"{self.name} runner options")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this runtime cannot run on this machine, or None when it can."""
        if cls.platforms is not None and not sys.platform.startswith(cls.platforms):
            return cls.platform_note or f"{cls.runtime} runs only on {', '.join(cls.platforms)}"
        missing = missing_modules(cls.modules)
        if missing:
            return f"Python module {missing[0]} is not installed"
        return None

    def require_platform(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PlatformUnsupported(reason)

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def load(self, artifact: Artifact) -> Run:
        """Open the artifact and return a function from input arrays to output arrays."""


RUNNERS: Registry[type[Runner]] = Registry("runner")
