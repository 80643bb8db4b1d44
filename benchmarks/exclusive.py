"""One timing run at a time on this machine.

Two runs timing at once spoil each other's figures: each pins itself to the first cores the OS
gives it (`protocol.pinned`), so on a 2-core machine both time on core 0, and on separate cores
they still share caches and memory bandwidth. So every command timing here (`benchmark`,
`validate`, `export`, `compare`) holds an exclusive lock on one file per machine while it times,
and a second one waits, saying which run it waits for. The kernel drops a lock when its holder
dies, however it dies, so a killed run never leaves the machine locked.

Only timing is serialized: another run's exports or training still load the machine, which the
`noise` and `drift` lines of `validate` show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; timing runs are not serialized there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_ENV = "PIPELINE_TIMING_LOCK"  # the lock file's path, or "off"
_held = 0  # this process's depth of `timing_alone`: a timed export inside a timed workflow


def lock_path() -> Path | None:
    value = os.environ.get(LOCK_ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else Path(tempfile.gettempdir()) / "pipeline-timing.lock"


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 400, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _lock(what: str) -> int | None:
    """This machine's timing lock, once free: its open file, or None where there is none to take."""
    path = lock_path()
    if path is None or fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # another user's lock file, a read-only /tmp: time anyway
        log.info("timing without the machine's timing lock (%s: %s)", path, e)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another run timing on this machine (%s) to finish: timings taken at once "
                        "spoil each other", _holder(fd) or "its holder did not say who it is")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)  # who holds it, for the next run's message
        os.pwrite(fd, f"pid {os.getpid()}: {what or ' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}".encode(), 0)
    except BaseException:  # Ctrl-C while waiting
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def timing_alone(what: str = "") -> Iterator[None]:
    """Hold this machine's timing lock for the block, waiting for another holder first."""
    global _held
    fd = None if _held else _lock(what)
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if fd is not None:
            os.close(fd)  # releases the lock
