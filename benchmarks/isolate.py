"""Time artifacts in a separate process: a runtime that crashes or hangs costs one answer, not
the whole run, and the timed process does nothing but time, as `benchmark_model` does.

`Child` is a spawned process serving requests one at a time, with a time limit on each
(starting one imports torch and the runtime: seconds, so one is reused). On it:

- `RowWorker` checks and times table rows, one fresh load each. A row that gives no answer
  within the time limit, or whose worker dies, is recorded as failed with the reason; a fresh
  worker takes the next row. A numerical mismatch is still an error for the whole run.
- `NetworkTimer` loads whole networks once and times them as often as asked. Loading once, in
  a process that does nothing else, is how a deployment and an independent check run a
  network; loading it again for every measurement, in a process that builds and exports
  networks, times the same networks 7-9% slower than an independent loop does, and a
  predictor fitted on such timings is off by as much against anyone else's.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from functools import partial
from typing import Any, Callable

import numpy as np

from benchmarks.exclusive import timing_alone
from benchmarks.protocol import Protocol, Reference, measure, pinned, warm_reference
from benchmarks.runners.base import Run, Runner
from benchmarks.table import Row
from blocks.space import LayerShape
from export.base import Artifact
from core.errors import PipelineError
from core.plugins import LOADED, load_plugins

STARTUP_TIMEOUT_S = 300.0  # importing torch and a runtime on a busy machine
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def follow_parent(parent_pid: int) -> None:
    """Called first in every child we spawn (timing children, export workers): it leaves when
    its parent does, and leaves Ctrl-C to the parent.

    Ctrl-C reaches the whole process group. The parent saves what is finished and stops its
    children itself, so a child that took the signal too would only print its own traceback or,
    as an export worker, report the interrupt and take the next export. A parent killed outright
    (SIGKILL, the OOM killer) cannot stop its children: on Linux the kernel kills them for it.
    Without that, two export workers orphaned by a killed `benchmark` ran on at full speed beside
    the resumed run's timing, then idled forever holding a converter's memory.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the kernel was told to follow it
        os._exit(1)


def _parent_logging() -> tuple[int, str | None]:
    """The parent's log level and format, so the child's warnings read like the parent's."""
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
    return root.getEffectiveLevel(), fmt


def _serve(conn: Any, handler_pickle: bytes, plugins: list[str], log_setup: tuple[int, str | None],
           parent_pid: int) -> None:
    follow_parent(parent_pid)
    level, fmt = log_setup
    logging.basicConfig(level=level, **({"format": fmt} if fmt else {}))
    load_plugins(plugins)
    # Unpickled only now: the handler may name a runner or exporter a plugin defines. The bytes
    # are the parent's own objects, never a user's file.
    make_handler: Callable[[], Callable[[Any], Any]] = pickle.loads(handler_pickle)
    handle = make_handler()
    reply: tuple[str, Any] = ("ready", None)
    while True:
        try:  # the parent may be gone (where the kernel cannot take us with it): leave quietly
            conn.send(reply)
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            reply = ("ok", handle(request))
        except PipelineError as e:
            reply = ("error", str(e))


class Hung(Exception):
    """The child gave no answer within the time limit and was killed."""


class Crashed(Exception):
    """The child died while answering; args[0] is its exit code."""


class Child:
    """A spawned process answering `handler(request)` one request at a time.

    `make_handler` is called in the child (it must be picklable: a module-level function or a
    `functools.partial` of one); it returns the function that answers each request. The child is
    born pinned to `pin_threads` cores where the OS allows, as a timed process must be: an
    ExecuTorch program pinned only after it ran once took ~8 ms a call whatever the block.
    """

    def __init__(self, make_handler: Callable[[], Callable[[Any], Any]], pin_threads: int = 0) -> None:
        self.make_handler, self.pin_threads = make_handler, pin_threads
        self.process: Any = None
        self.conn: Any = None

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(abandon=exc_type is not None)

    @property
    def started(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, pickle.dumps(self.make_handler), list(LOADED), _parent_logging(), os.getpid()),
                                   daemon=True)
        with pinned(self.pin_threads, self.pin_threads > 0):
            self.process.start()
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise PipelineError(f"the timing process did not start within {STARTUP_TIMEOUT_S:.0f} s; is the machine overloaded?")
        try:
            self.conn.recv()
        except EOFError:
            code = self.process.exitcode
            self.kill()
            raise PipelineError(f"the timing process died while starting (exit code {code})") from None

    def ask(self, request: Any, timeout_s: float) -> Any:
        """The child's answer; `PipelineError` for an error it reported, `Hung` or `Crashed`
        (the child is gone then) when it gave none."""
        if not self.started:
            self.start()
        self.conn.send(request)
        if not self.conn.poll(timeout_s):
            self.kill()
            raise Hung()
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self.kill()
            raise Crashed(code) from None
        if kind == "error":
            raise PipelineError(payload)
        return payload

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.process = self.conn = None

    def close(self, abandon: bool = False) -> None:
        """Let the child finish and leave; `abandon` (an interrupt, an error) kills it instead
        of waiting out the measurement in progress."""
        if not abandon and self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(10)
            except (BrokenPipeError, OSError):
                pass
        self.kill()


def _row_handler(make_timer: Callable[[], Callable[[str, LayerShape, Artifact], Row]]) -> Callable[[Any], Row]:
    timer = make_timer()
    return lambda request: timer(*request)


class RowWorker:
    """`measure(block, shape, artifact) -> Row` in a child process with a time limit per row,
    answered there by the row timer `make_timer()` makes (`benchmarks.harness.RowTimer`).

    The caller pins this process before starting it (the worker inherits the pinning)."""

    def __init__(self, make_timer: Callable[[], Callable[[str, LayerShape, Artifact], Row]], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.child = Child(partial(_row_handler, make_timer))

    def __enter__(self) -> "RowWorker":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(abandon=exc_type is not None)

    def measure(self, block: str, shape: LayerShape, artifact: Artifact) -> Row:
        try:
            return self.child.ask((block, shape, artifact), self.timeout_s)
        except Hung:
            return Row(block, shape, status="failed",
                       reason=f"no result within {self.timeout_s:g} s: the runtime hung on this block (--row-timeout)")
        except Crashed as e:
            return Row(block, shape, status="failed", reason=f"the runtime crashed on this block (exit code {e.args[0]})")

    def close(self, abandon: bool = False) -> None:
        self.child.close(abandon)


class _Loaded:
    """Artifacts loaded once and kept, each with its input; timed on request, against another
    of them when asked (`benchmarks.protocol.Reference`)."""

    def __init__(self, runner: Runner, protocol: Protocol) -> None:
        self.runner, self.protocol = runner, protocol
        self.runs: list[tuple[Run, list[np.ndarray]]] = []
        self.references: dict[int, Reference] = {}

    def call(self, index: int) -> Callable[[], Any]:
        run, inputs = self.runs[index]
        return lambda: run(inputs)

    def __call__(self, request: tuple[str, Any]) -> Any:
        op, arg = request
        if op == "load":
            artifact, inputs = arg
            self.runs.append((self.runner.load(artifact), inputs))
            return len(self.runs) - 1
        index, against = arg
        if against is not None and against not in self.references:
            self.references[against] = warm_reference(self.call(against), self.protocol)
        return measure(self.call(index), self.protocol, reference=self.references.get(against)).stats()


class NetworkTimer:
    """Whole networks, each loaded once and timed under `protocol` whenever asked.

    With `protocol.row_timeout_s` > 0 (the default) they are loaded and timed in a fresh child
    process with that time limit on each load and each measurement; with 0, in this process.
    Every network stays loaded until `close` (FBNet at 224×224: 18-38 MiB a network).
    """

    def __init__(self, runner: Runner, protocol: Protocol) -> None:
        self.protocol = protocol
        self.names: list[str] = []
        self.child = Child(partial(_Loaded, runner, protocol), protocol.threads if protocol.pin else 0) \
            if protocol.row_timeout_s > 0 else None
        self.local = _Loaded(runner, protocol) if self.child is None else None
        self.alone = contextlib.ExitStack()

    def __enter__(self) -> "NetworkTimer":
        self.alone.enter_context(timing_alone())  # no other run times on this machine meanwhile
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close(abandon=exc_type is not None)
        finally:
            self.alone.close()

    def _ask(self, request: tuple[str, Any], what: str) -> Any:
        if self.child is None:
            return self.local(request)
        try:
            return self.child.ask(request, self.protocol.row_timeout_s)
        except Hung:
            raise PipelineError(f"{what}: no answer within {self.protocol.row_timeout_s:g} s, the runtime hung "
                                "(raise --row-timeout if it is only slow)") from None
        except Crashed as e:
            raise PipelineError(f"{what}: the runtime crashed (exit code {e.args[0]})") from None

    def load(self, artifact: Artifact, inputs: list[np.ndarray]) -> int:
        """Load `artifact` for good; returns its index for `stats`."""
        self.names.append(str(artifact.path))
        return self._ask(("load", (artifact, inputs)), f"loading {artifact.path}")

    def stats(self, index: int, against: int | None = None) -> dict[str, Any]:
        """One measurement (see `Samples.stats`) of the network loaded as `index`, each repeat
        followed by one of network `against`'s when given."""
        return self._ask(("time", (index, against)), f"timing {self.names[index]}")

    def median_ms(self, index: int) -> float:
        return float(self.stats(index)["median_ms"])

    def close(self, abandon: bool = False) -> None:
        if self.child is not None:
            self.child.close(abandon)
        self.local = None
