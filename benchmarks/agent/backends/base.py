"""What a measurement agent's backend is: a kind of device (this machine, Android phones on adb,
iPhones on a Mac) that lists its devices and times artifacts on one of them.

The agent hands a backend one `Job` at a time per device (its queue), with the artifact
already stored on the agent's disk under its own hash. A backend never sees a name or a path
from a request: only the stored files and checked values.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmarks.agent.wire import DeviceInfo, MeasureResult
from benchmarks.protocol import Protocol
from core.errors import PipelineError
from core.registry import Registry


@dataclass(frozen=True)
class Stored:
    """An artifact on the agent's disk: `path` is the agent's own (a file, or the folder a
    packed folder was unpacked to), `format` what the client says it is (tflite, pte, ...)."""

    path: Path
    sha256: str
    format: str


@dataclass(frozen=True)
class Job:
    runner: str
    runner_options: dict[str, Any]
    protocol: Protocol
    artifact: Stored
    input: np.ndarray
    reference: Stored | None = None
    reference_input: np.ndarray | None = None
    outputs: bool = False


class BackendUnavailable(Exception):
    """The backend cannot work on this machine (a missing tool, another OS); the message says
    what would make it work."""


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """The devices this backend can time on now. BackendUnavailable when it can time on none
        because something is missing here."""

    @abstractmethod
    def measure(self, device: str, job: Job) -> MeasureResult:
        """Time `job` on `device` (one of `devices()`'s ids). A model the device's runtime refuses
        is a `failed` result with the reason, not an exception."""

    def operations_estimated(self, device: str, job: Job) -> dict[str, Any]:
        """Per-operation time of the network `job.artifact`, estimated by the device's own tooling
        (`wire.OperationsResult`'s fields). Only backends whose tooling gives it override this."""
        raise PipelineError(f"the {self.name} backend has no per-operation estimates; only the iphone backend "
                            "(Core ML's compute plan) gives them")

    def close(self) -> None:
        """Release what the backend holds (processes, connections)."""


BACKENDS: Registry[type[Backend]] = Registry("agent backend")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def device_id(raw: str) -> str:
    """A device's id as the wire format allows (`wire.NAME`): an adb serial `10.0.0.5:5555`
    becomes `10.0.0.5_5555`."""
    return (_UNSAFE.sub("_", raw).strip("._-") or "device")[:100]
