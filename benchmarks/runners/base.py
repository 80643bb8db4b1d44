"""The runner interface: open an artifact on this machine and run it (`benchmarks.protocol.measure`
times the loaded run; `benchmarks.isolate` decides in which process).

A runner class is everything the rest of the tool knows about its runtime: which formats it
opens, where it runs, the runtime's own timer on a phone (`device_tool`, for device bundles),
how to time by hand where it has none (`manual_howto`), and how to open an artifact with the
runtime's API alone (`open_plain`, for perf/independent_timing.py). Nothing else lists runtimes.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from export.base import Artifact, missing_modules
from core.config import build_config
from core.errors import PipelineError, PlatformUnsupported
from core.registry import Registry

Run = Callable[[list[np.ndarray]], list[np.ndarray]]
Call = Callable[[], object]  # one run of an opened artifact on a fixed input


@dataclass(frozen=True)
class DeviceTool:
    """A runtime's own command-line timer, run on an Android device over adb."""

    tool: str  # what the user must put on the device, and how to get it
    env: str  # the variable that says where it is on the device
    default_path: str
    command: str  # one network's command, run by the device's shell; the script sets $TOOL, $MODEL and $THREADS
    parse: Callable[[str], float]  # one run's log -> ms per inference; ValueError when it holds none
    notes: str  # what one run of `command` does, for the script's header

    @property
    def name(self) -> str:
        """The tool's file name (benchmark_model), for one-line messages."""
        return self.default_path.rsplit("/", 1)[-1]


class Runner(ABC):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    runtime: ClassVar[str]  # the package whose version a table records
    Options: ClassVar[type]
    modules: ClassVar[tuple[str, ...]] = ()  # Python modules the runtime needs
    # sys.platform prefixes where the runtime exists (None: everywhere its package installs).
    platforms: ClassVar[tuple[str, ...] | None] = None
    platform_note: ClassVar[str] = ""  # what to do elsewhere
    # The runtime's own timer on an Android device: a device bundle gets a script that runs it
    # over adb. None: the bundle's README says to time by hand and write the times down.
    device_tool: ClassVar[DeviceTool | None] = None
    # How to time an artifact by hand on the device, for the bundle's README (empty: no advice).
    manual_howto: ClassVar[str] = ""
    # Does the runtime take a thread count? (Core ML picks its compute units itself.)
    takes_threads: ClassVar[bool] = True

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

    @classmethod
    def open_plain(cls, path: str, threads: int) -> Call:
        """Open `path` with the runtime's own Python API and nothing else of this tool (no
        options, no output checks), on a fixed random input, as a re-timing that must not
        trust this tool's loading code does (perf/independent_timing.py). A runner without
        one cannot be re-timed that way."""
        raise PipelineError(f"runner '{cls.name}' has no plain opener (Runner.open_plain)")


RUNNERS: Registry[type[Runner]] = Registry("runner")
