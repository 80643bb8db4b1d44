"""Measure rows in a separate process, so a runtime that crashes or hangs on one block costs
that row, not the whole benchmark.

One worker process is started per benchmark and reused for every row (starting a process
imports torch and the runtime: seconds). A row that gives no answer within the time limit,
or whose worker dies, is recorded as failed with the reason; a fresh worker takes the next
row. A numerical mismatch is still an error for the whole run, as in-process.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from benchmarks.table import Row
from blocks.space import LayerShape
from export.base import Artifact
from pipeline.errors import PipelineError
from pipeline.plugins import LOADED, load_plugins

STARTUP_TIMEOUT_S = 300.0  # importing torch and a runtime on a busy machine


def _parent_logging() -> tuple[int, str | None]:
    """The parent's log level and format, so the child's warnings read like the parent's."""
    root = logging.getLogger()
    fmt = next((h.formatter._fmt for h in root.handlers if h.formatter is not None), None)
    return root.getEffectiveLevel(), fmt


def _serve(conn: Any, job: Any, plugins: list[str], log_setup: tuple[int, str | None]) -> None:
    from benchmarks.harness import measure_row  # the child imports what the parent had

    level, fmt = log_setup
    logging.basicConfig(level=level, **({"format": fmt} if fmt else {}))
    load_plugins(plugins)
    conn.send(("ready", None))
    while True:
        request = conn.recv()
        if request is None:
            return
        block, shape, artifact = request
        try:
            conn.send(("ok", measure_row(job, block, shape, artifact)))
        except PipelineError as e:
            conn.send(("error", str(e)))


class RowWorker:
    """`measure(block, shape, artifact) -> Row` in a child process with a time limit per row."""

    def __init__(self, job: Any, timeout_s: float) -> None:
        self.job, self.timeout_s = job, timeout_s
        self.process: Any = None
        self.conn: Any = None

    def __enter__(self) -> "RowWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.job, list(LOADED), _parent_logging()), daemon=True)
        self.process.start()
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self._kill()
            raise PipelineError(f"the timing process did not start within {STARTUP_TIMEOUT_S:.0f} s; is the machine overloaded?")
        try:
            self.conn.recv()
        except EOFError:
            code = self.process.exitcode
            self._kill()
            raise PipelineError(f"the timing process died while starting (exit code {code})") from None

    def measure(self, block: str, shape: LayerShape, artifact: Artifact) -> Row:
        if self.process is None:
            self._start()
        self.conn.send((block, shape, artifact))
        if not self.conn.poll(self.timeout_s):
            self._kill()
            return Row(block, shape, status="failed",
                       reason=f"no result within {self.timeout_s:g} s: the runtime hung on this block (--row-timeout)")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self._kill()
            return Row(block, shape, status="failed", reason=f"the runtime crashed on this block (exit code {code})")
        if kind == "error":
            raise PipelineError(payload)
        return payload

    def _kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.process = self.conn = None

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            try:
                self.conn.send(None)
                self.process.join(10)
            except (BrokenPipeError, OSError):
                pass
        self._kill()
