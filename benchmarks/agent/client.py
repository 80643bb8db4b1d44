"""The client side of the measurement agent: `--remote URL` and device files.

`RemoteTimer` has `NetworkTimer`'s interface (load once, time on request, against another), so
a table's rows, validate's networks and export's model are timed on the agent's device by the
same code that times them here. Each artifact is sent once: the client asks whether the agent
has its hash first, and the agent keeps what it received across restarts.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import Field

from benchmarks.agent.wire import (API, Array, DeviceInfo, Devices, MeasureRequest, MeasureResult, OperationsResult,
                                   ProtocolSpec, Strict, digest, pack)
from benchmarks.device import HOST_DEVICE
from benchmarks.protocol import Protocol
from core.config import validate
from core.errors import PipelineError
from core.fileio import read_config, read_text
from export.base import Artifact

log = logging.getLogger(__name__)

DEVICE_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
CONNECT_TIMEOUT_S = 10.0


class AgentError(PipelineError):
    """The agent could not be asked, or refused the request itself (not a measurement that
    failed): a table stops here, keeping its rows, and the same command goes on later."""


@dataclass(frozen=True)
class Remote:
    """Where an agent is and how to talk to it."""

    url: str
    token: str
    device: str | None = None  # the agent's device id; None: the one that offers the target's runner
    name: str | None = None  # the table's device name; None: the agent's device id
    ca: Path | None = None  # a certificate to trust for an agent with its own TLS certificate

    @property
    def where(self) -> str:
        return f"the agent at {self.url}"


PATH = r"^[^\x00-\x1f\x7f]+$"  # a file name in a device file: any but control characters


class DeviceFile(Strict):
    """`--device my-iphone.yaml`: a device reached through an agent."""

    # no spaces or control characters: they would end up in every message that names the agent or a file
    url: str = Field(pattern=r"^https?://[^\s/]\S*$", max_length=2000)
    token_file: str = Field(pattern=PATH, max_length=4096)
    agent_device: str | None = None
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    ca: str | None = Field(None, pattern=PATH, max_length=4096)


DEVICE_FIX = "a device file holds url: http(s)://HOST:PORT, token_file: PATH and optionally agent_device, name, ca"


def read_token(path: str | os.PathLike) -> str:
    token = read_text(path, "token file").strip()
    if not token or len(token.split()) != 1:
        raise PipelineError(f"token file '{path}' holds no token; copy the token 'pipeline agent' printed into it")
    return token


def find_device_file(device: str, root: Path) -> Path | None:
    """`--device NAME`'s file: NAME itself when it is a config file, else NAME.yaml in the current
    folder or in the workspace's `devices/`; None when there is none (a plain device name)."""
    if Path(device).suffix in DEVICE_FILE_SUFFIXES:
        return Path(device)
    for folder in (Path.cwd(), root / "devices"):
        for suffix in DEVICE_FILE_SUFFIXES:
            candidate = folder / f"{device}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def remote_from_file(path: Path) -> Remote:
    m = validate(DeviceFile, read_config(path, "device file"), f"device file '{path}'", DEVICE_FIX)
    base = path.parent
    token_file = base / m.token_file if not Path(m.token_file).is_absolute() else Path(m.token_file)
    ca = (base / m.ca if not Path(m.ca).is_absolute() else Path(m.ca)) if m.ca else None
    if ca is not None and not ca.is_file():
        raise PipelineError(f"device file '{path}': ca = '{m.ca}': no such file; name the certificate the agent serves "
                            "(its --tls-cert)")
    return Remote(m.url.rstrip("/"), read_token(token_file), m.agent_device, m.name or path.stem, ca)


def resolve_remote(device: str, url: str | None, token_file: Path | None, root: Path) -> Remote | None:
    """What `--device`, `--remote` and `--token-file` say: an agent to time on, or None (time here,
    or a bundle for a device by name). A device file holds the url and token file itself."""
    found = find_device_file(device, root)
    if found is not None:
        if url is not None:
            raise PipelineError(f"--device {device} names a device file, which holds its agent's url; drop --remote")
        return remote_from_file(found)
    if url is None:
        if token_file is not None:
            raise PipelineError("--token-file goes with --remote URL (the agent to time on); add --remote")
        return None
    if not url.startswith(("http://", "https://")):
        raise PipelineError(f"--remote {url}: give the agent's URL, e.g. http://127.0.0.1:8470 ('pipeline agent' prints it)")
    if token_file is None:
        raise PipelineError("--remote needs --token-file FILE holding the token 'pipeline agent' printed")
    return Remote(url.rstrip("/"), read_token(token_file), name=None if device == HOST_DEVICE else device)


class AgentClient:
    def __init__(self, remote: Remote, timeout_s: float | None = None) -> None:
        self.remote = remote
        verify: Any = ssl.create_default_context(cafile=str(remote.ca)) if remote.ca else True
        self.http = httpx.Client(base_url=remote.url, headers={"Authorization": f"Bearer {remote.token}"},
                                 verify=verify, timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S))
        self._hashes: dict[tuple[str, int, int], str] = {}
        self.sent = 0  # artifacts uploaded by this client (a second run of a table sends none)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise AgentError(f"{self.remote.where} gave no answer in time ({method} {path}); is its device busy "
                                "or hung? Restart the agent and run the same command to go on") from None
        except httpx.ConnectError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise AgentError(f"{self.remote.where} has a TLS certificate this machine does not trust; name the "
                                 "certificate it serves in a device file (ca: cert.pem)") from None
            raise AgentError(f"{self.remote.where} does not answer ({type(e).__name__}); start 'pipeline agent' "
                             "there, or check --remote, then run the same command to go on") from None
        except httpx.HTTPError as e:
            raise AgentError(f"{self.remote.where} does not answer ({type(e).__name__}); start 'pipeline agent' "
                                "there, or check --remote, then run the same command to go on") from None
        if response.status_code == 401:
            raise AgentError(f"{self.remote.where} refused the token; use the token it printed at start "
                                "(--token-file FILE)")
        if response.status_code >= 400 and response.status_code != 404:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:200]
            raise AgentError(f"{self.remote.where}: {detail}")
        return response

    def devices(self) -> Devices:
        try:
            return Devices.model_validate(self._call("GET", f"{API}/devices").json())
        except ValueError:
            raise AgentError(f"{self.remote.where} is not a pipeline agent (its device list is not one); "
                                "check --remote") from None

    def device_for(self, runner: str) -> DeviceInfo:
        """The agent's device to time `runner` on: the one `remote.device` names, else the only one
        offering that runner."""
        listing = self.devices()
        offering = [d for d in listing.devices if runner in d.runners]
        if self.remote.device is not None:
            for d in listing.devices:
                if d.id == self.remote.device:
                    if runner not in d.runners:
                        raise AgentError(f"{self.remote.where}: device '{d.id}' offers runners "
                                            f"{', '.join(d.runners) or 'none'}, not '{runner}'; pick another target")
                    return d
            raise AgentError(f"{self.remote.where} has no device '{self.remote.device}'; it has: "
                                f"{', '.join(d.id for d in listing.devices) or 'none'}")
        if len(offering) == 1:
            return offering[0]
        if not offering:
            why = "; ".join(f"{k}: {v}" for k, v in listing.unavailable.items())
            raise AgentError(f"{self.remote.where} has no device that runs '{runner}'"
                                + (f" ({why})" if why else "") + "; pick another target, or start the agent where "
                                "such a device is attached")
        raise AgentError(f"{self.remote.where} has {len(offering)} devices that run '{runner}' "
                            f"({', '.join(d.id for d in offering)}); name one with agent_device in a device file")

    def send(self, path: Path) -> str:
        """Make sure the agent has `path`'s bytes; returns their hash."""
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if key in self._hashes and not path.is_dir():
            return self._hashes[key]
        data = pack(path)
        sha = digest(data)
        if self._call("GET", f"{API}/artifacts/{sha}").status_code == 404:
            self._call("PUT", f"{API}/artifacts/{sha}", content=data,
                       headers={"Content-Type": "application/octet-stream"})
            self.sent += 1
        self._hashes[key] = sha
        return sha

    def measure(self, request: MeasureRequest) -> MeasureResult:
        response = self._call("POST", f"{API}/measure", content=request.model_dump_json(),
                              headers={"Content-Type": "application/json"})
        if response.status_code == 404:  # a device unplugged, or an artifact gone from its store
            raise AgentError(f"{self.remote.where}: {response.json().get('detail')}")
        return MeasureResult.model_validate(response.json())


@dataclass
class _Loaded:
    sha: str
    format: str
    input: np.ndarray
    outputs: list[np.ndarray] | None = None
    asked_outputs: bool = False


@dataclass
class RemoteTimer:
    """`NetworkTimer` on an agent's device: `load` sends an artifact (once), `stats` times it there."""

    client: AgentClient
    device: DeviceInfo
    runner: str
    runner_options: dict[str, Any]
    protocol: Protocol
    loaded: list[_Loaded] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # the last measurement's, from the agent

    def __enter__(self) -> "RemoteTimer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, artifact: Artifact, inputs: list[np.ndarray]) -> int:
        self.loaded.append(_Loaded(self.client.send(artifact.path), artifact.format, np.asarray(inputs[0])))
        return len(self.loaded) - 1

    def _request(self, index: int, against: int | None, outputs: bool) -> MeasureRequest:
        it, ref = self.loaded[index], self.loaded[against] if against is not None else None
        spec = ProtocolSpec(**{k: v for k, v in self.protocol.to_dict().items() if k in ProtocolSpec.model_fields})
        return MeasureRequest(device=self.device.id, runner=self.runner, runner_options=self.runner_options,
                              format=it.format, artifact=it.sha, input=Array.of(it.input),
                              reference=ref.sha if ref else None, reference_input=Array.of(ref.input) if ref else None,
                              protocol=spec, outputs=outputs)

    def stats(self, index: int, against: int | None = None) -> dict[str, Any]:
        """One measurement on the device (see `Samples.stats`); the first also fetches the outputs
        for checking, where the device's tool returns them."""
        it = self.loaded[index]
        result = self.client.measure(self._request(index, against, not it.asked_outputs))
        if result.status != "ok":
            raise PipelineError(f"{self.client.remote.where}, device '{self.device.id}': {result.reason}")
        if not it.asked_outputs:
            it.asked_outputs = True
            it.outputs = [o.array() for o in result.outputs] if result.outputs is not None else None
        self.provenance = result.provenance
        return result.stats

    def operations_estimated(self, index: int) -> list[dict[str, Any]]:
        """Per-operation time of network `index` on the device, as its tooling estimates it."""
        response = self.client._call("POST", f"{API}/operations", content=self._request(index, None, False).model_dump_json(),
                                     headers={"Content-Type": "application/json"})
        result = OperationsResult.model_validate(response.json())
        if result.status != "ok":
            raise PipelineError(f"{self.client.remote.where}, device '{self.device.id}': {result.reason}")
        return result.operations_estimated

    def median_ms(self, index: int) -> float:
        return float(self.stats(index)["median_ms"])

    @property
    def table_device(self) -> str:
        """The device name a table measured here goes under: the device file's, or the agent's id."""
        return self.client.remote.name or self.device.id

    def describe(self) -> dict[str, Any]:
        """The agent's device for a table's provenance: what it is and where it was reached."""
        return {**self.device.model_dump(), "agent": self.client.remote.url}

    def outputs(self, index: int) -> list[np.ndarray] | None:
        """What the device computed for the artifact's input (after its first `stats`), or None
        where its tool does not return outputs."""
        return self.loaded[index].outputs

    def close(self, abandon: bool = False) -> None:
        self.client.close()


def connect(remote: Remote, runner: str, runner_options: dict[str, Any], protocol: Protocol) -> RemoteTimer:
    """A timer on the agent's device that runs `runner`. The client waits for a measurement as
    long as the agent may take for one (its row time limit and then some)."""
    wait = protocol.row_timeout_s * (protocol.retries + 2) + 60 if protocol.row_timeout_s > 0 else None
    client = AgentClient(remote, wait)
    try:
        device = client.device_for(runner)
    except BaseException:
        client.close()
        raise
    return RemoteTimer(client, device, runner, dict(runner_options), protocol)
