"""`pipeline agent`: a small HTTP service on the machine a device hangs off, timing artifacts there.

Routes (every one but `/health` needs `Authorization: Bearer <token>`, the API docs and schema
too; the token is compared in constant time):

    GET  /health                    {"status": "ok"}
    GET  /v1/devices                what it can measure: devices, runtimes, runners
    GET  /v1/artifacts/{sha256}     is that artifact stored here? (404: send it)
    PUT  /v1/artifacts/{sha256}     the artifact's bytes, streamed; the agent hashes them itself
    POST /v1/measure                time a stored artifact (against another) on one device

Measurements on one device run one at a time, in the order they came (a single worker thread
per device): two timings at once would spoil each other. Uploads and listings do not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import yaml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from benchmarks.agent.client import read_token
from benchmarks.agent.backends import BACKENDS, Backend, BackendUnavailable, Job, Stored
from benchmarks.agent.wire import (API, FOLDER_FORMATS, HASH, MAX_ARRAY_VALUES, MAX_ARTIFACT_BYTES, DeviceInfo,
                                   Devices, MeasureRequest, MeasureResult, OperationsResult)
from benchmarks.agent.wire import Stored as StoredOut
from benchmarks.agent.wire import unpack
from benchmarks.protocol import Protocol
from benchmarks.runners import RUNNERS
from core import __version__
from core.config import option_value, short
from core.errors import PipelineError, first_line

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health",)
# A measure request carries two inputs as base64 (`wire.MAX_ARRAY_VALUES` each at most) and little else.
MAX_REQUEST_BYTES = 2 * (4 * MAX_ARRAY_VALUES * 4 // 3 + 8) + 64 * 1024  # the only route without the token: a load balancer's or a client's "is it up?"


@dataclass
class AgentSettings:
    token: str
    store: Path  # where artifacts are kept, each under the hash the agent computed
    backends: list[Backend]
    max_bytes: int = MAX_ARTIFACT_BYTES
    devices: dict[str, tuple[Backend, DeviceInfo]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


class TokenGate:
    """Every request but `OPEN_PATHS` carries the token, or gets 401 before anything else runs
    (the body is not read, the route not resolved)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                   "(pipeline agent printed it, or --token-file holds it)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Requests other than an artifact upload (which `Store.receive` limits as it streams) carry
    at most `limit` bytes: a JSON body is read whole, so an endless one would fill memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "PUT":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise Refused(413, f"the request is over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request is over {limit} bytes, the most this agent reads"}, status_code=413)


class Refused(Exception):
    """A request the agent answers with `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def refresh_devices(settings: AgentSettings) -> None:
    devices: dict[str, tuple[Backend, DeviceInfo]] = {}
    unavailable: dict[str, str] = {}
    for backend in settings.backends:
        try:
            for info in backend.devices():
                devices[info.id] = (backend, info)
        except BackendUnavailable as e:
            unavailable[backend.name] = str(e)
    settings.devices, settings.unavailable = devices, unavailable


class Store:
    """Artifacts on disk, each named by the SHA-256 of its bytes as computed here."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = root, max_bytes
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "unpacked").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def blob(self, sha: str) -> Path:
        if not HASH.fullmatch(sha):  # only ever a hash, never a name: nothing else reaches a path
            raise Refused(422, "an artifact is named by the 64 lowercase hex digits of its SHA-256")
        return self.root / "blobs" / sha

    def has(self, sha: str) -> bool:
        return self.blob(sha).is_file()

    async def receive(self, sha: str, chunks: AsyncIterator[bytes], declared: int | None) -> int:
        """Stream a body to disk, hashing it; keep it only if its hash is `sha`."""
        target = self.blob(sha)
        if declared is not None and declared > self.max_bytes:
            raise Refused(413, f"the artifact is {declared} bytes; this agent takes at most {self.max_bytes}")
        h, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise Refused(413, f"the artifact is over {self.max_bytes} bytes, the most this agent takes")
                    h.update(chunk)
                    f.write(chunk)
            if size == 0:
                raise Refused(422, "the artifact is empty")
            if h.hexdigest() != sha:
                raise Refused(422, f"the bytes sent hash to {h.hexdigest()}, not {sha}: the upload was damaged or "
                                   "named wrongly; send it again")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size

    def stored(self, sha: str, fmt: str) -> Stored:
        """The stored artifact as a runtime opens it: a file, or for a folder format, the
        folder its tar unpacks to (unpacked once)."""
        blob = self.blob(sha)
        if not blob.is_file():
            raise Refused(404, f"artifact {sha} is not stored here; send it first (PUT {API}/artifacts/{sha})")
        if fmt not in FOLDER_FORMATS:
            return Stored(blob, sha, fmt)
        folder = self.root / "unpacked" / f"{sha}.{fmt}"
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=self.root / "tmp", suffix=f".{fmt}"))
            try:
                unpack(blob, tmp)
            except Exception as e:  # not a tar, or one whose members would leave the folder
                shutil.rmtree(tmp, ignore_errors=True)
                raise Refused(422, f"artifact {sha} is not a {fmt} folder packed as a tar ({first_line(e)})") from None
            with contextlib.suppress(OSError):  # another request unpacked it meanwhile
                os.replace(tmp, folder)
            shutil.rmtree(tmp, ignore_errors=True)
        return Stored(folder, sha, fmt)


def _job(settings: AgentSettings, store: Store, req: MeasureRequest) -> tuple[Backend, Job]:
    if req.device not in settings.devices:
        refresh_devices(settings)  # a phone plugged in since
    if req.device not in settings.devices:
        known = ", ".join(settings.devices) or "none"
        raise Refused(404, f"no device '{req.device}' on this agent; its devices: {known}")
    backend, info = settings.devices[req.device]
    if req.runner not in info.runners:
        raise Refused(422, f"device '{req.device}' offers no runner '{req.runner}'; it offers: {', '.join(info.runners) or 'none'}")
    runner = RUNNERS.get(req.runner)
    if req.format not in runner.formats:
        raise Refused(422, f"runner '{req.runner}' opens {', '.join(runner.formats)}, not '{req.format}'")
    if (req.reference is None) != (req.reference_input is None):
        raise Refused(422, "give 'reference' and 'reference_input' together, or neither")
    try:
        x = req.input.array()
        ref_x = req.reference_input.array() if req.reference_input is not None else None
    except ValueError as e:
        raise Refused(422, f"an input array is malformed: {e}") from None
    artifact = store.stored(req.artifact, req.format)
    reference = store.stored(req.reference, req.format) if req.reference is not None else None
    return backend, Job(req.runner, dict(req.runner_options), Protocol(**req.protocol.model_dump()), artifact, x,
                        reference, ref_x, req.outputs)


def create_app(settings: AgentSettings) -> FastAPI:
    store = Store(settings.store, settings.max_bytes)
    queues: dict[str, ThreadPoolExecutor] = {}
    refresh_devices(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for q in queues.values():
            q.shutdown(wait=False, cancel_futures=True)
        for backend in settings.backends:
            backend.close()

    app = FastAPI(title="pipeline measurement agent", version=__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES)
    app.add_middleware(TokenGate, token=settings.token)  # added last, so it runs first

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {err.get('msg', 'invalid request')}"}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(f"{API}/devices", response_model=Devices)
    def devices() -> Devices:
        refresh_devices(settings)
        return Devices(agent=__version__, devices=[info for _, info in settings.devices.values()],
                       unavailable=settings.unavailable)

    @app.get(f"{API}/artifacts/{{sha256}}", response_model=StoredOut)
    def has_artifact(sha256: str) -> StoredOut:
        path = store.blob(sha256)
        if not path.is_file():
            raise Refused(404, f"artifact {sha256} is not stored here")
        return StoredOut(sha256=sha256, size=path.stat().st_size)

    @app.put(f"{API}/artifacts/{{sha256}}", response_model=StoredOut, status_code=201, openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}})
    async def put_artifact(sha256: str, request: Request) -> StoredOut:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/octet-stream":
            raise Refused(415, f"send the artifact's bytes as application/octet-stream, not '{kind or 'nothing'}'")
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        store.blob(sha256)  # refuse a bad name before reading the body
        size = await store.receive(sha256, request.stream(), declared)
        return StoredOut(sha256=sha256, size=size)

    @app.post(f"{API}/measure", response_model=MeasureResult)
    async def measure(req: MeasureRequest) -> MeasureResult:
        backend, job = _job(settings, store, req)
        queue = queues.setdefault(req.device, ThreadPoolExecutor(1, thread_name_prefix=f"device-{req.device}"))
        try:
            return await asyncio.wrap_future(queue.submit(backend.measure, req.device, job))
        except PipelineError as e:
            raise Refused(422, str(e)) from None

    @app.post(f"{API}/operations", response_model=OperationsResult)
    async def operations(req: MeasureRequest) -> OperationsResult:
        backend, job = _job(settings, store, req)
        queue = queues.setdefault(req.device, ThreadPoolExecutor(1, thread_name_prefix=f"device-{req.device}"))
        try:
            return OperationsResult(**await asyncio.wrap_future(queue.submit(backend.operations_estimated, req.device, job)))
        except PipelineError as e:
            raise Refused(422, str(e)) from None

    return app


def parse_backend_options(pairs: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """`BACKEND.KEY=VALUE` flags -> {backend: {key: value}}; values are read as YAML scalars."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, dot, rest = pair.partition(".")
        key, eq, value = rest.partition("=")
        if not dot or not eq or not key or name not in BACKENDS:
            raise PipelineError(f"--backend-option {pair!r} must look like BACKEND.KEY=VALUE with BACKEND one of "
                                f"{', '.join(BACKENDS.names())}, e.g. adb.serial=R58M12345")
        try:
            out.setdefault(name, {})[key] = option_value(yaml.safe_load(value) if value else "")
        except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: option_value's refusal too
            raise PipelineError(f"--backend-option {short(pair)}: the value is not text, a finite number or "
                                f"true/false; quote it (--backend-option '{name}.{key}=\"...\"')") from None
    return out


def make_backends(names: list[str], options: dict[str, dict[str, Any]] | None = None) -> list[Backend]:
    options = options or {}
    unused = set(options) - set(names)
    if unused:
        raise PipelineError(f"--backend-option for {', '.join(sorted(unused))}, which is not served; add --backend "
                            f"{sorted(unused)[0]}")
    backends = []
    for n in names:
        try:
            backends.append(BACKENDS.get(n)(**options.get(n, {})))
        except TypeError as e:  # an option the backend does not take
            raise PipelineError(f"--backend-option: backend '{n}' {str(e).split(')', 1)[-1].strip()}; see "
                                "'pipeline agent --help'") from None
    return backends


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def agent_token(token_file: Path | None) -> tuple[str, str]:
    """(token, where it came from): read from `token_file`, or made now (and written to
    `token_file`, readable by its owner alone, when that file does not exist yet)."""
    if token_file is not None and token_file.exists():
        return read_token(token_file), f"from {token_file}"
    token = secrets.token_urlsafe(32)
    if token_file is None:
        return token, "made for this run"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, f"written to {token_file}"


def check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise PipelineError("TLS needs both --tls-cert and --tls-key")
    for p in (cert, key):
        if p is not None and not p.is_file():
            raise PipelineError(f"TLS file '{p}' does not exist; give the certificate and key files the agent serves with")


def serve(settings: AgentSettings, host: str, port: int, cert: Path | None = None, key: Path | None = None,
          ready: Any = None) -> None:
    """Run the agent until interrupted. `ready(url)` is called once it listens."""
    import uvicorn

    check_tls(cert, key)
    if host not in LOOPBACK and cert is None:
        log.warning("listening on %s without TLS: the token and the artifacts cross the network in clear text; "
                    "give --tls-cert and --tls-key", host)
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ssl_certfile=cert, ssl_keyfile=key,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    if ready is not None:
        scheme = "https" if cert else "http"

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.05)
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            ready(f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}")

        async def main() -> None:
            await asyncio.gather(server.serve(), announce())

        asyncio.run(main())
    else:
        server.run()
