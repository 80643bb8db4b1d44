"""File helpers: atomic writes (temporary file, then rename), what a refused write tells the
user, a lock on an output, and safe config loading."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import filelock
import yaml

from core.config import short
from core.errors import DiskFull, PipelineError, StorageError

_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is used up"}
_REFUSED = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system"}
STORAGE_ERRNOS = frozenset(_FULL) | frozenset(_REFUSED)


def _os_errors(e: BaseException | None) -> Iterator[OSError]:
    """`e` and what it was raised from or while handling, OSErrors only: converters wrap the OS's
    error in their own (torch's RuntimeError, a PipelineError naming the converter)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            yield e
        e = e.__cause__ or e.__context__


def storage_fault(e: BaseException, path: str | os.PathLike | None = None) -> StorageError | None:
    """The one-line error for a write of `path` (else the file the OS names) that the file system
    refused (full, over quota, no permission, read-only), found anywhere in `e`'s chain; None for
    any other failure."""
    for err in _os_errors(e):
        if err.errno not in STORAGE_ERRNOS:
            continue
        target = Path(path) if path is not None else Path(err.filename) if err.filename else None
        if err.errno in _FULL:
            where = (f"the device holding '{target.parent}' (while writing '{target.name}')" if target
                     else "a device this command writes to")
            return DiskFull(f"{_FULL[err.errno]} on {where}; free space there or choose another --out")
        denied = f" on '{err.filename}'" if err.filename and Path(err.filename) != target else ""
        if path is None:  # the OS's error alone does not say whether it was a read or a write
            return StorageError(f"'{target or '?'}': {_REFUSED[err.errno]}; check its permissions, or choose another "
                                "--out")
        return StorageError(f"cannot write '{target}': {_REFUSED[err.errno]}{denied}; make it writable or choose "
                            "another --out")
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Writes to `path` inside the block that the file system refuses end as `storage_fault`'s
    one line; every other error passes unchanged (a bug keeps its traceback)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        fault = storage_fault(e, path)
        if fault is None:
            raise
        raise fault from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Readers therefore see either the old file or the complete new one, never a half-written one.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have, so
        # tables and models stay shareable.
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like `atomic_path` for outputs that are folders (a Core ML `.mlpackage`).

    The writer creates the yielded path; it replaces `path` only if the block succeeds.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent))  # converters check the suffix
        tmp.rmdir()  # writers (coremltools' save) want to create the folder themselves
        old = path.with_name(f".{path.name}.old")
        try:
            yield tmp
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        finally:
            for leftover in (tmp, old):
                if leftover.exists():
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, what: str, elsewhere: str) -> Iterator[None]:
    """Hold `output`'s lock while the block writes it (and what is named after it); where another
    process holds it, a one-line PipelineError at once: two runs writing the same files would
    silently overwrite each other's, and waiting would only overwrite the first one's later.

    flock (filelock.FileLock), not a soft lock: the kernel drops it when its holder dies, however
    it dies, so a killed run never blocks the next one. The lock file, `.NAME.lock` beside
    `output`, holds the holder's pid and command; it is removed at the end (before the lock is let
    go: filelock's acquire skips a removed inode), or by the next run after a SIGKILL."""
    output = Path(output)
    path = output.with_name(f".{output.name}.lock")
    holder = f"{os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n".encode()
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path, blocking=False, on_acquired=lambda fd: _stamp_holder(fd, holder))
        try:
            lock.acquire()
        except filelock.Timeout:
            raise PipelineError(f"another {what} is writing '{output}' (pid {_holder_of(path)}); wait for it to "
                                f"finish, or {elsewhere}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def _stamp_holder(fd: int, holder: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder, 0)


def _holder_of(lock_file: Path) -> str:
    try:
        return lock_file.read_text(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def sweep_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> int:
    """Remove what `atomic_path` and `atomic_dir` left in `folder` when their process was killed
    outright (SIGKILL, the OOM killer: no `finally` runs); returns how many. Only entries older
    than `older_than_s` go, so another run's write in progress is never touched."""
    folder, swept = Path(folder), 0
    if not folder.is_dir():
        return 0
    deadline = time.time() - older_than_s
    for entry in folder.glob(".*.tmp*"):
        with contextlib.suppress(FileNotFoundError):  # another run swept it first
            if entry.lstat().st_mtime < deadline:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                swept += 1
    return swept


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomically write a file produced by `writer(tmp_path)` (savefig, ...; torch.save: `write_stream`)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_stream(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write what `writer` writes to an open binary file. Given a file rather than a
    name, torch.save's failures keep the OS's errno: given a name, it reports a full disk as a
    bare RuntimeError."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        writer(f)


def _expect_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise PipelineError(f"{what} '{path}' is a folder; pass the file itself")
    if not path.is_file():
        raise PipelineError(f"{what} '{path}' does not exist; check the path")


def read_text(path: str | os.PathLike, what: str) -> str:
    """A text file's contents as UTF-8; a missing file or other bytes are a one-line PipelineError."""
    path = Path(path)
    _expect_file(path, what)
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: editors on Windows write a byte-order mark
    except UnicodeDecodeError as e:
        raise PipelineError(f"{what} '{path}' is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                            "save it as UTF-8") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file; a missing, unreadable or corrupt file is a one-line PipelineError."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, or an integer past Python's digit limit
        raise PipelineError(
            f"{what} '{path}' is corrupt or truncated ({_first_line(e)}); regenerate it or pass another file"
        ) from None


def _first_line(e: BaseException) -> str:
    """What went wrong, on one line: YAML's own message spans several, its problem and place first."""
    mark = getattr(e, "problem_mark", None)
    if getattr(e, "problem", None) and mark is not None:
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"  # type: ignore[attr-defined]
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def parse_config_text(text: str, suffix: str) -> Any:
    """The document in `text` as the format `suffix` names; yaml.YAMLError, ValueError (TOML, JSON
    and digit-limit errors) or RecursionError where it is not one."""
    if suffix == ".toml":
        return tomllib.loads(text)
    if suffix in (".yaml", ".yml"):
        return yaml.safe_load(text)
    return json.loads(text)


def read_config(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a YAML (safe_load), TOML or JSON mapping, chosen by the file's extension."""
    path = Path(path)
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise PipelineError(f"{what} '{path}' must end in .yaml, .yml, .toml or .json; rename it")
    text = read_text(path, what)
    try:
        data = parse_config_text(text, path.suffix)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as e:
        # TypeError: PyYAML hashing an unhashable key inside a merge (`<<: [[1]]`)
        raise PipelineError(f"{what} '{path}' is not valid {path.suffix[1:].upper()}: {_first_line(e)}; "
                            "fix the syntax at that line") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{what} '{path}' holds {short(data)} at the top level; it must hold a mapping "
                            "(key: value lines)")
    return data
