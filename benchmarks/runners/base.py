"""The runner interface: open an artifact on this machine, run it, time it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np

from benchmarks.protocol import Protocol, Samples, measure
from export.base import Artifact
from pipeline.config import build_config
from pipeline.registry import Registry

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


class Runner(ABC):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]  # the package whose version a table records
    Options: ClassVar[type]

    def __init__(self, threads: int = 1, **options: Any) -> None:
        self.threads = threads
        self.options = build_config(self.Options, options, f"{self.name} runner options")

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def load(self, artifact: Artifact) -> Run:
        """Open the artifact and return a function from input arrays to output arrays."""

    def time(self, artifact: Artifact, inputs: list[np.ndarray], protocol: Protocol) -> Samples:
        start = time.perf_counter()
        run = self.load(artifact)
        load_ms = (time.perf_counter() - start) * 1e3
        return measure(lambda: run(inputs), protocol, load_ms)


RUNNERS: Registry[type[Runner]] = Registry("runner")
