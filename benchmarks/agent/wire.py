"""The measurement agent's wire format, in one place: what client and agent send each other.

An artifact travels as bytes named by their SHA-256: a file as it is, a folder (a Core ML
`.mlpackage`) as an uncompressed tar of its files in sorted order with fixed metadata, so the
same folder always packs to the same bytes and is sent once. The agent recomputes the hash of
what it receives and names the stored file by that hash, never by anything a request says.

Arrays (a block's input, its outputs) travel as base64 of little-endian float32 with their shape.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import tarfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

API = "/v1"
TOKEN_HEADER = "Authorization"  # "Bearer <token>"
HASH = re.compile(r"[0-9a-f]{64}")
HASH_FIELD = f"^{HASH.pattern}$"  # a field's pattern is searched for, not matched whole: anchored
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024  # FBNet-sized networks are tens of MiB; a phone model, hundreds at most
MAX_ARRAY_VALUES = 2**24  # one input or output: 64 MiB of float32
FOLDER_FORMATS = ("mlpackage",)  # formats whose artifacts are folders: they travel as a tar
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # a device id or a runner name: no slashes, spaces or colons


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Array(Strict):
    shape: list[int] = Field(max_length=8)
    data: str = Field(max_length=4 * MAX_ARRAY_VALUES * 4 // 3 + 8)  # base64 of float32

    @classmethod
    def of(cls, a: np.ndarray) -> "Array":
        a = np.ascontiguousarray(a, dtype="<f4")
        return cls(shape=list(a.shape), data=base64.b64encode(a.tobytes()).decode())

    def array(self) -> np.ndarray:
        """The array; ValueError when shape and data disagree or it is too large."""
        # math.prod, not np.prod: Python ints neither overflow nor wrap (a dimension of 10**30)
        if any(d < 0 for d in self.shape) or math.prod(self.shape) > MAX_ARRAY_VALUES:
            raise ValueError(f"an array of shape {self.shape} is larger than {MAX_ARRAY_VALUES} values")
        raw = base64.b64decode(self.data, validate=True)
        return np.frombuffer(raw, dtype="<f4").reshape(self.shape).astype(np.float32)


class ProtocolSpec(Strict):
    """`benchmarks.protocol.Protocol`'s timing fields, bounded so a request cannot ask for hours."""

    warmup_runs: int = Field(5, ge=0, le=1000)
    warmup_ms: float = Field(20.0, ge=0, le=60_000)
    repeats: int = Field(15, ge=3, le=1000)
    min_repeat_ms: float = Field(5.0, ge=0.1, le=60_000)
    threads: int = Field(1, ge=1, le=256)
    max_cv: float = Field(0.10, gt=0, le=10)
    retries: int = Field(2, ge=0, le=10)
    pin: bool = True
    row_timeout_s: float = Field(300.0, ge=0, le=3600)


class MeasureRequest(Strict):
    """Time `artifact` on `device` with `runner`, each repeat followed by one of `reference`'s
    when given; with `outputs`, also return what one run gives for `input`."""

    device: str = Field(pattern=NAME)
    runner: str = Field(pattern=NAME)
    runner_options: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=32)
    format: str = Field(pattern=NAME)
    artifact: str = Field(pattern=HASH_FIELD)
    input: Array
    reference: str | None = Field(None, pattern=HASH_FIELD)
    reference_input: Array | None = None
    protocol: ProtocolSpec = ProtocolSpec()
    outputs: bool = False


class MeasureResult(Strict):
    status: Literal["ok", "failed"]
    reason: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)  # `Samples.stats()`: median_ms, samples_ms, ...
    outputs: list[Array] | None = None  # None: the device's tool runs the model but does not return its outputs
    provenance: dict[str, Any] = Field(default_factory=dict)  # device, runtime version, threads, cores, ...


class OperationsResult(Strict):
    """Per-operation time inside a whole network, as the device's tooling ESTIMATES it (Core ML's
    compute plan apportions each prediction's measured time to operations by estimated cost)."""

    status: Literal["ok", "failed"]
    reason: str = ""
    operations_estimated: list[dict[str, Any]] = Field(default_factory=list)  # costliest first
    provenance: dict[str, Any] = Field(default_factory=dict)


class DeviceInfo(Strict):
    id: str
    backend: str
    model: str
    os: str
    runners: list[str]
    runtimes: dict[str, str]
    details: dict[str, Any] = Field(default_factory=dict)  # SoC, governor, thermal status, ...


class Devices(Strict):
    agent: str  # the agent's version
    devices: list[DeviceInfo]
    unavailable: dict[str, str] = Field(default_factory=dict)  # backend -> why it offers nothing


class Stored(Strict):
    sha256: str
    size: int


def pack(path: Path) -> bytes:
    """An artifact's bytes: a file as it is, a folder as a reproducible tar."""
    if path.is_file():
        return path.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f.relative_to(path).as_posix())
            info.size, info.mode, info.mtime = f.stat().st_size, 0o644, 0
            with f.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(blob: Path, dest: Path) -> None:
    """A folder artifact's tar into `dest`; tarfile's `data` filter refuses absolute paths, `..`,
    links out of `dest` and device files, so a crafted tar cannot write elsewhere."""
    with tarfile.open(blob, mode="r:") as tar:
        tar.extractall(dest, filter="data")
