"""The agent's own machine as a device: its runners (ONNX Runtime, LiteRT, ExecuTorch, and Core ML
on macOS), timed exactly as a local table times them.

Artifacts are loaded and timed in a child process (`benchmarks.isolate.Child`), so a runtime
that hangs or crashes on one artifact costs that answer, not the agent. The child keeps the
artifacts it loaded most recently (a row's retries and a network's rounds reuse them) and the
reference it warmed, as a local table's timing process does.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections import OrderedDict
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np

from benchmarks.agent.backends.base import BACKENDS, Backend, Job, device_id
from benchmarks.agent.wire import Array, DeviceInfo, MeasureResult
from benchmarks.device import host_info
from benchmarks.exclusive import timing_alone
from benchmarks.isolate import Child, Crashed, Hung
from benchmarks.protocol import Protocol, Reference, measure, warm_reference
from benchmarks.runners.base import RUNNERS, Run, Runner
from core.errors import PipelineError
from export.base import Artifact

KEEP_CHILDREN = 2  # timing processes kept at once (one per thread count asked for)
KEEP_LOADED = 32  # artifacts a child keeps open: FBNet networks at 224x224 are 18-38 MiB each


def _runners_here() -> dict[str, type[Runner]]:
    return {name: cls for name, cls in RUNNERS.items() if cls.unavailable_reason() is None}


class _Timing:
    """The child's side: open artifacts on request (keeping the last `KEEP_LOADED`) and time them."""

    def __init__(self) -> None:
        self.runners: dict[str, Runner] = {}
        self.loaded: OrderedDict[tuple, tuple[Run, float]] = OrderedDict()
        self.references: dict[tuple, Reference] = {}

    def _runner(self, job: Job) -> Runner:
        key = repr((job.runner, sorted(job.runner_options.items()), job.protocol.threads))
        if key not in self.runners:
            self.runners[key] = RUNNERS.get(job.runner)(threads=job.protocol.threads, **job.runner_options)
        return self.runners[key]

    def _open(self, job: Job, stored: Any) -> tuple[Run, float]:
        """(run, load ms) of `stored`, loaded once; load ms is 0 when it was already open."""
        runner = self._runner(job)
        key = (stored.sha256, job.runner, repr(sorted(job.runner_options.items())), job.protocol.threads)
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key][0], 0.0
        start = time.perf_counter()
        run = runner.load(Artifact(stored.path, stored.format, "agent", ()))
        load_ms = (time.perf_counter() - start) * 1e3
        self.loaded[key] = (run, load_ms)
        while len(self.loaded) > KEEP_LOADED:
            self.references.pop(self.loaded.popitem(last=False)[0], None)
        return run, load_ms

    def __call__(self, job: Job) -> dict[str, Any]:
        run, load_ms = self._open(job, job.artifact)
        reference = None
        if job.reference is not None:
            ref_run, _ = self._open(job, job.reference)
            key = (job.reference.sha256, job.runner, repr(sorted(job.runner_options.items())), job.protocol.threads)
            if key not in self.references:
                ref_in = [job.reference_input if job.reference_input is not None else job.input]
                self.references[key] = warm_reference(lambda: ref_run(ref_in), job.protocol)
            reference = self.references[key]
        inputs = [job.input]
        outputs = [np.asarray(o, dtype=np.float32) for o in run(inputs)] if job.outputs else None
        stats = measure(lambda: run(inputs), job.protocol, load_ms, reference).stats()
        return {"stats": stats, "outputs": outputs}


def _cores(protocol: Protocol) -> list[int] | None:
    """The cores a timing child pinned to `protocol.threads` runs on (`benchmarks.protocol.pinned`)."""
    if not protocol.pin or not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[:protocol.threads]


def _make_timing() -> _Timing:
    return _Timing()


@BACKENDS.register("local")
class LocalBackend(Backend):
    """This machine. One device, whose id is the host name."""

    name = "local"

    def __init__(self) -> None:
        self.id = device_id(socket.gethostname().split(".")[0] or "local")
        self.children: dict[int, Child] = {}  # by thread count: a timing child is born pinned to its cores

    def devices(self) -> list[DeviceInfo]:
        runners = _runners_here()
        info = host_info()
        runtimes = {}
        for cls in runners.values():
            try:
                runtimes[cls.runtime] = cls(threads=1).version()
            except PipelineError:
                continue
        return [DeviceInfo(id=self.id, backend=self.name, model=str(info["cpu"]),
                           os=f"{platform.system()} {platform.release()}", runners=sorted(runners),
                           runtimes=runtimes, details={k: v for k, v in info.items() if k != "cpu"})]

    def _child(self, threads: int, pin: bool) -> Child:
        key = threads if pin else 0
        if key not in self.children:
            while len(self.children) >= KEEP_CHILDREN:  # each holds the runtimes: keep a few, not one per request
                self.children.pop(next(iter(self.children))).close()
            self.children[key] = Child(partial(_make_timing), threads if pin else 0)
        return self.children[key]

    def measure(self, device: str, job: Job) -> MeasureResult:
        protocol: Protocol = job.protocol
        child = self._child(protocol.threads, protocol.pin)
        timeout = protocol.row_timeout_s or 3600.0
        with timing_alone("pipeline agent"):  # not at once with a local run timing on this machine
            try:
                answer = child.ask(job, timeout)
            except Hung:
                return MeasureResult(status="failed", reason=f"no result within {timeout:g} s: the runtime hung "
                                                             "on this artifact (--row-timeout)")
            except Crashed as e:
                return MeasureResult(status="failed", reason=f"the runtime crashed on this artifact (exit code {e.args[0]})")
            except PipelineError as e:  # the agent's own paths are not the client's business
                reason = str(e)
                for stored in (job.artifact, job.reference):
                    if stored is not None:
                        reason = reason.replace(str(stored.path), f"artifact {stored.sha256[:12]}")
                return MeasureResult(status="failed", reason=reason)
        outputs = None if answer["outputs"] is None else [Array.of(o) for o in answer["outputs"]]
        runner_cls = RUNNERS.get(job.runner)
        return MeasureResult(status="ok", stats=answer["stats"], outputs=outputs, provenance={
            "device": self.id, "backend": self.name, "runtime": runner_cls.runtime,
            "runtime_version": runner_cls(threads=1, **job.runner_options).version(), "threads": protocol.threads,
            "affinity": _cores(protocol), "protocol": asdict(protocol), "host": host_info()})

    def close(self) -> None:
        for child in self.children.values():
            child.close()
        self.children.clear()
