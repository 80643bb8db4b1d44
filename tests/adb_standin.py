"""A stand-in adb server for tests: a real TCP server on 127.0.0.1 speaking as much of adb's
host protocol as adbutils uses, with phones whose shell answers from a callable.

The protocol (adb's SERVICES.TXT and SYNC.TXT): every request is 4 hex digits of length and
the text; the server answers `OKAY` or `FAIL` + a length-prefixed message. `host:transport:S` /
`host:tport:serial:S` (the latter also answers an 8-byte transport id) switch the connection to
phone S, whose next request is a service: `shell:CMD` (the output, then the connection closes),
`shell,v2:CMD` (packets: id, little-endian length, payload; id 3 carries the exit code) or
`sync:` (8-byte little-endian headers: STAT, SEND with DATA/DONE, QUIT).

adbutils' `shell2` runs `CMD; echo X4EXIT:$?` over `shell:` to learn the exit code; the
stand-in records `CMD` and answers the exit code the phone gives. Modelled on adbutils' own
tests/adb_server.py, synchronous here so a fixture can start and stop it in a thread.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from typing import Self

TIMEOUT_S = 5.0  # every socket the stand-in holds
EXIT_MARK = "; echo X4EXIT:$?"
S_IFREG = 0o100000

Respond = Callable[[str, str], tuple[str, int]]  # (serial, shell command) -> (output, exit code)


class AdbStandIn:
    """`with AdbStandIn({"SERIAL": "device"}, respond) as adb:` serves on `adb.port` until the
    block ends. `requests` records the host requests, `commands` (serial, shell command), `pushed`
    (serial, path, bytes)."""

    def __init__(self, devices: dict[str, str], respond: Respond, version: int = 41) -> None:
        self.devices = devices  # serial -> state (device, unauthorized, offline)
        self.respond = respond
        self.version = version  # 41 and above: adbutils uses host:tport:serial:
        self.requests: list[str] = []
        self.commands: list[tuple[str, str]] = []
        self.pushed: list[tuple[str, str, bytes]] = []
        self.files: dict[tuple[str, str], bytes] = {}  # what is on each phone, by (serial, path)
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.standin = self
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="adb-standin", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT_S)

    def shell(self, serial: str) -> list[str]:
        """The shell commands phone `serial` was sent, in order."""
        with self.lock:
            return [c for s, c in self.commands if s == serial]


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: AdbStandIn


def _block(text: str) -> bytes:
    data = text.encode()
    return f"{len(data):04x}".encode() + data


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT_S)
        try:
            self._serve(self._request())
        except (OSError, EOFError):
            pass  # the client went away (adbutils closes after each answer)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _request(self) -> str:
        return self._read(int(self._read(4), 16)).decode()

    def _fail(self, message: str) -> None:
        self.request.sendall(b"FAIL" + _block(message))

    def _serve(self, req: str) -> None:
        adb = self.server.standin
        with adb.lock:
            adb.requests.append(req)
        if req == "host:version":
            self.request.sendall(b"OKAY" + _block(f"{adb.version:04x}"))
        elif req in ("host:devices", "host:devices-l"):
            extra = " product:standin model:Standin device:standin" if req.endswith("-l") else ""
            listing = "".join(f"{s}\t{state}{extra}\n" for s, state in adb.devices.items())
            self.request.sendall(b"OKAY" + _block(listing))
        elif m := re.fullmatch(r"host-serial:(.+):features", req):
            self.request.sendall(b"OKAY" + _block("shell_v2,cmd,stat_v2"))
        elif m := re.fullmatch(r"host:(tport:serial|transport):(.+)", req):
            serial = m.group(2)
            if adb.devices.get(serial) != "device":
                self._fail(f"device '{serial}' not found")
                return
            self.request.sendall(b"OKAY" + (struct.pack("<q", 1) if m.group(1) == "tport:serial" else b""))
            self._service(serial, self._request())
        else:
            self._fail(f"unknown host service: {req}")

    def _service(self, serial: str, service: str) -> None:
        if service.startswith("shell:"):
            self._shell(serial, service[len("shell:"):])
        elif service.startswith("shell,v2:"):
            self._shell_v2(serial, service[len("shell,v2:"):])
        elif service == "sync:":
            self.request.sendall(b"OKAY")
            self._sync(serial)
        else:
            self._fail(f"unknown service: {service}")

    def _answer(self, serial: str, command: str) -> tuple[str, int]:
        adb = self.server.standin
        with adb.lock:
            adb.commands.append((serial, command))
        return adb.respond(serial, command)

    def _shell(self, serial: str, command: str) -> None:
        marked = command.endswith(EXIT_MARK)
        out, code = self._answer(serial, command[:-len(EXIT_MARK)] if marked else command)
        if marked:
            out += ("" if not out or out.endswith("\n") else "\n") + f"X4EXIT:{code}\n"
        self.request.sendall(b"OKAY" + out.encode())

    def _shell_v2(self, serial: str, command: str) -> None:
        out, code = self._answer(serial, command)
        data = out.encode()
        self.request.sendall(b"OKAY" + bytes([1]) + struct.pack("<I", len(data)) + data
                             + bytes([3]) + struct.pack("<I", 1) + bytes([code & 0xFF]))

    def _sync(self, serial: str) -> None:
        adb = self.server.standin
        while True:
            try:
                head = self._read(8)
            except EOFError:
                return
            cmd, arg = head[:4], self._read(struct.unpack("<I", head[4:])[0]).decode()
            if cmd == b"STAT":
                with adb.lock:
                    data = adb.files.get((serial, arg))
                mode, size, mtime = (0, 0, 0) if data is None else (S_IFREG | 0o644, len(data), 1)
                self.request.sendall(b"STAT" + struct.pack("<III", mode, size, mtime))
            elif cmd == b"SEND":
                self._receive(serial, arg.rsplit(",", 1)[0])
            elif cmd == b"QUIT":
                return
            else:
                msg = f"unsupported sync request {cmd!r}".encode()
                self.request.sendall(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                return

    def _receive(self, serial: str, path: str) -> None:
        """A SEND's DATA chunks up to DONE, stored as the phone's file `path`."""
        adb = self.server.standin
        data = b""
        while True:
            kind, n = self._read(4), struct.unpack("<I", self._read(4))[0]
            if kind == b"DONE":
                break
            assert kind == b"DATA", kind
            data += self._read(n)
        with adb.lock:
            adb.files[(serial, path)] = data
            adb.pushed.append((serial, path, data))
        self.request.sendall(b"OKAY" + struct.pack("<I", 0))


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (for the no-server case)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
