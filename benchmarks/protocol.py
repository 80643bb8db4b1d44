"""The measurement protocol shared by every runner, and the statistics of its samples.

Modelled on TVM's `time_evaluator` (the number of calls per repeat grows until one repeat
lasts `min_repeat_ms`, so fast blocks are not lost in timer noise) and on LiteRT's
`benchmark_model` (load, first run and steady state are timed separately).

With a `Reference` (another artifact, loaded and warm), every repeat is followed by one of the
reference's, and the artifact is measured relative to it: on a shared machine the speed wanders
within a fraction of a second, under both alike, and the ratio of two repeats timed 5 ms apart
cancels it where repeats of one artifact alone cannot.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 5
    warmup_ms: float = 20.0
    repeats: int = 15
    min_repeat_ms: float = 5.0
    threads: int = 1
    # A row whose coefficient of variation exceeds max_cv is measured again (up to `retries`
    # times, keeping the steadiest run) and flagged `wide` if it stays above.
    max_cv: float = 0.10
    retries: int = 2
    pin: bool = True  # pin the timing process to `threads` cores where the OS allows
    # Rows are checked and timed in a child process; one that takes longer (a hung runtime)
    # is killed and recorded as failed. 0: time in this process, with no limit.
    row_timeout_s: float = 300.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """An artifact loaded and warmed up, whose repeats interleave with a measured artifact's."""

    call: Callable[[], Any]
    number: int  # calls inside each of its repeats


@dataclass(frozen=True)
class Samples:
    """Raw timings of one artifact: per-call milliseconds, one per repeat (and the reference's
    repeat right after each, when measured against one)."""

    per_call_ms: tuple[float, ...]
    number: int  # calls averaged inside each repeat
    load_ms: float
    first_ms: float
    reference_ms: tuple[float, ...] = ()

    def stats(self) -> dict[str, Any]:
        """Median, spread and count. Against a reference, they describe the repeats relative to
        the reference's next to them (`ratio` is their median), in ms at the reference's median
        speed over this measurement: the machine's wobble removed, the row's own spread kept."""
        a = np.asarray(self.per_call_ms, dtype=float)
        # Stored rounded to 1 ns; a ratio is taken of what is stored, so that the file checks.
        raw = [round(v, 6) for v in self.per_call_ms]
        extra: dict[str, Any] = {}
        if self.reference_ms:
            ref = np.asarray([round(v, 6) for v in self.reference_ms], dtype=float)
            ratios = np.asarray(raw) / ref
            a = ratios * float(np.median(ref))
            extra = {"ratio": float(np.median(ratios)), "reference_ms": ref.tolist()}
        p10, p25, p50, p75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
        mean = float(a.mean())
        return {
            "median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
            "iqr_ms": float(p75 - p25), "mean_ms": mean,
            "cv": float(a.std(ddof=1) / mean) if len(a) > 1 and mean > 0 else 0.0,
            "count": int(len(a)), "number": self.number,
            "load_ms": self.load_ms, "first_ms": self.first_ms,
            "samples_ms": raw,  # as timed, for anyone who re-analyses
            **extra,
        }


def _timed(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) * 1e3


def _warm_up(call: Callable[[], Any], protocol: Protocol) -> int:
    """Warm `call` up and return the calls per repeat that make one last `min_repeat_ms`."""
    warm_start = time.perf_counter()
    runs = 0
    while runs < protocol.warmup_runs or (time.perf_counter() - warm_start) * 1e3 < protocol.warmup_ms:
        call()
        runs += 1
    number = 1
    while True:  # TVM: raise `number` until one repeat lasts at least min_repeat_ms
        elapsed = _timed(call, number)
        if elapsed >= protocol.min_repeat_ms or number >= 1 << 16:
            return number
        number *= 2 if elapsed <= 0 else max(2, min(8, int(protocol.min_repeat_ms / elapsed) + 1))


def warm_reference(call: Callable[[], Any], protocol: Protocol) -> Reference:
    """`call` (an artifact's inference, already loaded) warmed up, to measure others against."""
    call()
    with pinned(protocol.threads, protocol.pin):
        return Reference(call, _warm_up(call, protocol))


def measure(call: Callable[[], Any], protocol: Protocol, load_ms: float = 0.0,
            reference: Reference | None = None) -> Samples:
    """Time `call` (one inference on an already-loaded artifact) under `protocol`, each repeat
    followed by one of `reference`'s when given.

    The first run happens before the process is pinned, the rest pinned: an ExecuTorch program
    first run after its process is pinned to one core takes ~8 ms a call whatever the block.
    (A timing child pinned from birth is unaffected; pinning again there changes nothing.)
    """
    first_ms = _timed(call, 1)
    with pinned(protocol.threads, protocol.pin):
        number = _warm_up(call, protocol)
        if reference is None:
            return Samples(tuple(_timed(call, number) / number for _ in range(protocol.repeats)), number, load_ms, first_ms)
        pairs = [(_timed(call, number) / number, _timed(reference.call, reference.number) / reference.number)
                 for _ in range(protocol.repeats)]
    return Samples(tuple(p[0] for p in pairs), number, load_ms, first_ms, tuple(p[1] for p in pairs))


@contextlib.contextmanager
def pinned(threads: int, enabled: bool = True) -> Iterator[list[int] | None]:
    """Pin this process to `threads` of the cores it may use (Linux), so timings do not migrate
    between cores; yields the cores used (None where the OS has no affinity call)."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cores = sorted(before)[:max(threads, 1)]
    os.sched_setaffinity(0, cores)
    try:
        yield cores
    finally:
        os.sched_setaffinity(0, before)
