"""iPhones and iPads attached to the agent's Mac, timed through coremltools 9's on-device tooling
(`coremltools.models.ml_program.experimental`; docs/iphone.md).

coremltools builds its `modelrunner` app with Xcode, signs it with the user's Apple development
team, installs and launches it with `xcrun devicectl`, and then exchanges files with it: a
compiled model to load, inputs to predict on. The app times `MLModel(contentsOf:)` and each
`prediction(from:)` with the device's own clock (`mach_absolute_time`), so the durations here are
the device's, without the seconds each round trip through devicectl takes on the Mac.

The app's model services bind to the event loop they were created on, so this backend owns one
loop, on a thread of its own, and runs every coremltools coroutine there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.agent.backends.base import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    Job,
    Stored,
    device_id,
)
from benchmarks.agent.wire import DeviceInfo, MeasureResult
from benchmarks.protocol import Protocol, Samples
from core.errors import PipelineError, first_line
from export.base import package_version, quiet_import
from export.coreml import COMPUTE_UNITS, coreml_feed

EXPERIMENTAL = "coremltools.models.ml_program.experimental"
KEEP_LOADED = 8  # models a device keeps loaded (a row's retries and its reference reuse them)
PREPARE_TIMEOUT_S = 1800.0  # the first preparation builds the modelrunner app with xcodebuild: minutes
TEAM = re.compile(r"[A-Z0-9]{10}")  # an Apple team id; coremltools puts it in a shell command line
# Each prediction is a devicectl round trip of a second or more on the Mac, and its duration is
# the device's own, not a host timer's: averaging many predictions per repeat buys little.
MAX_NUMBER = 1
OPERATIONS_ESTIMATED_NOTE = (
    "estimated: coremltools' benchmark_operation_execution splits each measured prediction among "
    "operations by Core ML's compute-plan cost weights; no operation is timed on its own")


class CoreMLToolsDevices:
    """The device side as coremltools 9 offers it: what a test replaces with a stand-in."""

    def unavailable_reason(self) -> str | None:
        """Why coremltools cannot reach a device from here (one line naming the fix), or None."""
        if sys.platform != "darwin":
            return ("the iphone backend needs a Mac with Xcode: run 'pipeline agent' on the Mac "
                    "the iPhone is attached to")
        xcrun = shutil.which("xcrun")
        found = xcrun and subprocess.run([xcrun, "--find", "devicectl"], capture_output=True, text=True, check=False)
        if not found or found.returncode != 0:
            return "'xcrun devicectl' is missing: install Xcode 15 or later and run 'xcode-select -s /Applications/Xcode.app'"
        if shutil.which("devicectl") is None:  # coremltools runs some devicectl commands by bare name
            return f"coremltools calls 'devicectl' by name: add {os.path.dirname(found.stdout.strip())} to PATH"
        try:
            quiet_import(f"{EXPERIMENTAL}.perf_utils")
        except ImportError:
            return (f"coremltools {package_version('coremltools')} lacks {EXPERIMENTAL}: "
                    "pip install 'coremltools>=9.0' on this Mac")
        workspace = Path(quiet_import("coremltools").__file__).parent / "modelrunner" / "ModelRunner.xcworkspace"
        if not workspace.is_dir():
            return f"coremltools has no modelrunner app project ({workspace}): install its macOS wheel, pip install 'coremltools>=9.0'"
        return None

    def connected(self) -> list[Any]:
        """coremltools' `Device`s of the iPhones and iPads that are connected now."""
        from coremltools.models.ml_program.experimental.remote_device import (
            Device,
            DeviceType,
        )

        return [d for kind in (DeviceType.IPHONE, DeviceType.IPAD) for d in Device.get_connected_devices(device_type=kind)]

    def hardware(self) -> dict[str, dict[str, Any]]:
        """devicectl's hardware properties (marketingName, productType, ...) by device identifier:
        coremltools' `Device` keeps only its name, type and OS."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "devices.json"
            try:
                subprocess.run(["xcrun", "devicectl", "list", "devices", "-j", str(out)],
                               capture_output=True, timeout=60, check=True)
                devices = json.loads(out.read_text())["result"]["devices"]
            except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
                return {}  # the model name is a nicety: the device is listed without it
        return {d.get("identifier", ""): d.get("hardwareProperties") or {} for d in devices if isinstance(d, dict)}

    async def prepare(self, device: Any, team: str, working_directory: Path) -> Any:
        """`device` with coremltools' modelrunner app built, signed by `team`, installed and running."""
        from coremltools.models.ml_program.experimental.remote_device import (
            AppSigningCredentials,
        )

        return await device.prepare_for_model_debugging(
            credentials=AppSigningCredentials(development_team=team), working_directory=working_directory)


def coremltools_benchmarker(path: Path, compute_units: str, device: Any) -> Any:
    """coremltools' `MLModelBenchmarker` of the `.mlpackage` at `path` on a prepared `device`.
    The Mac only reads the package (`skip_model_load`); the device loads it, compiled."""
    ct = quiet_import("coremltools")
    from coremltools.models.ml_program.experimental.perf_utils import MLModelBenchmarker

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[compute_units], skip_model_load=True)
    return MLModelBenchmarker(model=model, device=device)


class _Loop:
    """One event loop on a thread of its own: coremltools' remote model services keep the loop
    they were made on, so the backend's coroutines all run on the same one, whichever thread asks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="iphone-backend", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """`coro`'s result; TimeoutError (after cancelling it) when it takes over `timeout` s."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class _Failed(Exception):
    """A job the device could not time; the message is the result's one-line reason."""


@dataclass
class _Loaded:
    """A model loaded on a device: its benchmarker, load time, and (once warmed) calls per repeat."""

    bench: Any
    load_ms: float
    number: int | None = None


def _mean(measurement: Any) -> float:
    """Per-prediction ms of one `MLModelBenchmarker.Measurement` (its samples are ms already)."""
    samples = list(measurement.samples)
    if not samples:
        raise ValueError("coremltools returned no prediction durations")
    return sum(samples) / len(samples)


def _inputs(bench: Any, array: np.ndarray) -> dict[str, Any]:
    """`array` under the model's first input name, in the element type the model declares."""
    from coremltools import proto

    feature = bench.model_spec.description.input[0]
    if feature.type.WhichOneof("Type") == "imageType":  # an app's image classifier: fed an image
        return coreml_feed(bench.model_spec, [array])
    kinds = proto.FeatureTypes_pb2.ArrayFeatureType
    dtype = {kinds.FLOAT16: np.float16, kinds.DOUBLE: np.float64, kinds.INT32: np.int32}.get(
        feature.type.multiArrayType.dataType, np.float32)
    return {feature.name: np.ascontiguousarray(array, dtype=dtype)}


async def _warm_up(loaded: _Loaded, inputs: dict[str, np.ndarray], protocol: Protocol, max_number: int) -> float:
    """Run the first prediction and the protocol's warm-up ones; set `loaded.number` by TVM's rule
    on the device's durations (capped at `max_number`) and return the first prediction's ms.
    `warmup_ms` has no say: the device idles for the devicectl round trip between predictions."""
    first_ms = _mean(await loaded.bench.benchmark_predict(inputs=inputs, iterations=1))
    typical = first_ms
    if protocol.warmup_runs:
        warm = await loaded.bench.benchmark_predict(inputs=inputs, iterations=protocol.warmup_runs)
        typical = statistics.median(warm.samples)
    wanted = math.ceil(protocol.min_repeat_ms / typical) if typical > 0 else max_number
    loaded.number = max(1, min(max_number, wanted))
    return first_ms


def _compute_device(device: Any) -> str:
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    for cls, name in ((MLNeuralEngineComputeDevice, "NeuralEngine"), (MLGPUComputeDevice, "GPU"), (MLCPUComputeDevice, "CPU")):
        if isinstance(device, cls):
            return name
    return type(device).__name__


def _path(path: Any) -> str:
    """A `ModelStructurePath` as `function/block/output`: `main/0/var_12`."""
    parts = []
    for c in path.components:
        for field in ("name", "index", "output_name"):
            if hasattr(c, field):
                parts.append(str(getattr(c, field)))
    return "/".join(parts)


def _operation(info: Any) -> dict[str, Any]:
    """One `MLModelBenchmarker.OperationExecutionInfo` as JSON, its times named as estimates."""
    usage, stats = info.compute_device_usage, info.measurement.statistics
    return {
        "operation": info.spec.type, "outputs": [o.name for o in info.spec.outputs], "path": _path(info.path),
        "compute_device": None if usage is None else _compute_device(usage.preferred_compute_device),
        "supported_devices": [] if usage is None else [_compute_device(d) for d in usage.supported_compute_devices],
        "estimated_median_ms": None if stats is None else stats.median,
        "estimated_samples_ms": list(info.measurement.samples),
    }


@BACKENDS.register("iphone")
class IPhoneBackend(Backend):
    """iPhones and iPads connected to this Mac. A device's id is its name (`Alices-iPhone`)."""

    name = "iphone"

    def __init__(self, team: str | int | None = None, compute_units: str = "ALL", *, max_number: int = MAX_NUMBER,
                 working_dir: Path | None = None, device_api: Any = None,
                 benchmarker_factory: Callable[[Path, str, Any], Any] = coremltools_benchmarker) -> None:
        """`team`: the Apple development team id that signs coremltools' modelrunner app (Xcode >
        Settings > Accounts; `--backend-option iphone.team=ABCDE12345`). `compute_units`: Core ML's,
        unless a job's runner options say. `device_api` and `benchmarker_factory` stand in for
        coremltools' device side in tests."""
        team = None if team is None else str(team)  # an all-digit id arrives from YAML as an int
        if team is not None and not TEAM.fullmatch(team):
            raise PipelineError(f"Apple development team id '{team}' is not 10 capital letters and digits: "
                                "copy it from Xcode > Settings > Accounts")
        if compute_units not in COMPUTE_UNITS:
            raise PipelineError(f"compute units '{compute_units}' is not one of {', '.join(COMPUTE_UNITS)}")
        if max_number < 1:
            raise PipelineError(f"max_number={max_number}: it must be 1 or more predictions per repeat")
        self.team, self.compute_units, self.max_number = team, compute_units, max_number
        # Kept between runs: coremltools reuses the modelrunner app it built there. No spaces in
        # it: coremltools puts it in xcodebuild's command line unquoted.
        self.working_dir = working_dir or Path.home() / ".cache" / "pipeline-agent" / "iphone"
        self.api = device_api or CoreMLToolsDevices()
        self.make_benchmarker = benchmarker_factory
        self.info: dict[str, DeviceInfo] = {}
        self.found: dict[str, Any] = {}  # coremltools `Device`s by id, as last listed
        self.ready: dict[str, Any] = {}  # prepared `Device`s (the modelrunner app running) by id
        self.loaded: dict[str, OrderedDict[tuple[str, str], _Loaded]] = {}
        self._loop: _Loop | None = None
        self._available = False

    def unavailable_reason(self) -> str | None:
        """Why this backend can time nothing here (one line naming the fix), or None."""
        reason = self.api.unavailable_reason()
        if reason is None and not self.team:
            reason = ("the iphone backend needs the Apple development team id that signs coremltools' modelrunner "
                      "app: --backend-option iphone.team=TEAMID (Xcode > Settings > Accounts shows it)")
        return reason

    def _require(self) -> None:
        if not self._available:  # once met, the Mac's tools stay met for the agent's life
            reason = self.unavailable_reason()
            if reason is not None:
                raise BackendUnavailable(reason)
            self._available = True

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop.run(coro, timeout)

    def devices(self) -> list[DeviceInfo]:
        self._require()
        found = self.api.connected()
        hardware = self.api.hardware() if found else {}
        names = [d.name for d in found]
        ids = [device_id(d.name if names.count(d.name) == 1 else f"{d.name}-{d.identifier[:8]}") for d in found]
        self.found = dict(zip(ids, found))
        self.info = {i: self._describe(i, d, hardware.get(d.identifier, {})) for i, d in zip(ids, found)}
        if not found:
            raise BackendUnavailable("no iPhone or iPad connected to this Mac: plug one in (or pair it in Xcode > "
                                     "Window > Devices and Simulators), unlock it and trust this Mac")
        return list(self.info.values())

    def _describe(self, id_: str, device: Any, hardware: dict[str, Any]) -> DeviceInfo:
        kind = "iPad" if device.type.value == "ipad" else "iPhone"
        os_name = "iPadOS" if kind == "iPad" else "iOS"
        model = hardware.get("marketingName") or kind
        details = {"name": device.name, "identifier": device.identifier, "udid": device.udid,
                   "os_build": device.os_build_number, "developer_mode": device.developer_mode_state,
                   "product_type": hardware.get("productType"), "hardware_model": hardware.get("hardwareModel"),
                   "cpu_type": (hardware.get("cpuType") or {}).get("name")}
        return DeviceInfo(id=id_, backend=self.name, model=model, os=f"{os_name} {device.os_version}",
                          runners=["coreml"], runtimes={"coremltools": package_version("coremltools"),
                                                        "iOS": device.os_version},
                          details={k: v for k, v in details.items() if v})

    def _prepared(self, device: str) -> Any:
        """The device with the modelrunner app running: built and launched on first use, and
        again when the app has stopped (its models then reload)."""
        ready = self.ready.get(device)
        if ready is not None and ready.session is not None and ready.session.is_alive():
            return ready
        if device not in self.found:
            with contextlib.suppress(BackendUnavailable):  # none connected: said just below
                self.devices()
        if device not in self.found:
            raise PipelineError(f"no connected iPhone or iPad '{device}' (connected: {', '.join(self.found) or 'none'}); "
                                "unlock it, trust this Mac and turn Developer Mode on")
        self.working_dir.mkdir(parents=True, exist_ok=True)
        try:
            ready = self._run(self.api.prepare(self.found[device], self.team, self.working_dir), PREPARE_TIMEOUT_S)
        except TimeoutError:
            raise PipelineError(f"preparing '{device}' took over {PREPARE_TIMEOUT_S:g} s") from None
        except Exception as e:  # noqa: BLE001  (xcodebuild, signing and devicectl each raise their own)
            raise PipelineError(f"coremltools could not build, sign or launch its modelrunner app on '{device}' "
                                f"({first_line(e)}): check team {self.team} in Xcode > Settings > Accounts, "
                                "and that the device trusts this Mac with Developer Mode on") from None
        self.ready[device] = ready
        self.loaded[device] = OrderedDict()
        return ready

    async def _open(self, device: str, stored: Stored, compute_units: str) -> tuple[_Loaded, float]:
        """(the model loaded on the device, load ms); load ms is 0 when it was already loaded."""
        models = self.loaded[device]
        key = (stored.sha256, compute_units)
        if key in models:
            models.move_to_end(key)
            return models[key], 0.0
        try:
            bench = self.make_benchmarker(stored.path, compute_units, self.ready[device])
            load_ms = _mean(await bench.benchmark_load(iterations=1))
        except Exception as e:  # noqa: BLE001  (the package unreadable, or the device refusing it)
            raise PipelineError(f"'{device}' could not load the model ({first_line(e)})") from None
        models[key] = _Loaded(bench, load_ms)
        while len(models) > KEEP_LOADED:
            await self._unload(models.popitem(last=False)[1])
        return models[key], load_ms

    @staticmethod
    async def _unload(loaded: _Loaded) -> None:
        # coremltools unloads a dropped model with a call it never awaits, so the device would keep
        # it: unload it here, through the benchmarker's loaded model (a private attribute).
        model = getattr(loaded.bench, "_loaded_model", None)
        if model is not None:
            with contextlib.suppress(Exception):
                await model.unload()

    async def _time(self, device: str, job: Job, compute_units: str) -> Samples:
        """Load once; then each repeat a `benchmark_predict` of the artifact and one of the reference."""
        protocol = job.protocol
        artifact, load_ms = await self._open(device, job.artifact, compute_units)
        inputs = _inputs(artifact.bench, job.input)
        reference = ref_inputs = None
        if job.reference is not None:
            reference, _ = await self._open(device, job.reference, compute_units)
            ref_array = job.reference_input if job.reference_input is not None else job.input
            ref_inputs = _inputs(reference.bench, ref_array)
            if reference.number is None:
                await _warm_up(reference, ref_inputs, protocol, self.max_number)
        first_ms = await _warm_up(artifact, inputs, protocol, self.max_number)
        per_call, ref_ms = [], []
        for _ in range(protocol.repeats):
            per_call.append(_mean(await artifact.bench.benchmark_predict(inputs=inputs, iterations=artifact.number)))
            if reference is not None:
                ref_ms.append(_mean(await reference.bench.benchmark_predict(inputs=ref_inputs, iterations=reference.number)))
        return Samples(tuple(per_call), artifact.number, load_ms, first_ms, tuple(ref_ms))

    def _compute_units(self, job: Job) -> str:
        if job.runner != "coreml":
            raise PipelineError(f"the iphone backend runs the 'coreml' runner only, not '{job.runner}'")
        units = str(job.runner_options.get("compute_units", self.compute_units))
        if units not in COMPUTE_UNITS:
            raise PipelineError(f"compute units '{units}' is not one of {', '.join(COMPUTE_UNITS)}")
        return units

    def _on_device(self, device: str, job: Job, work: Callable[[str], Coroutine[Any, Any, Any]]) -> tuple[Any, str]:
        """(what `work(compute units)` gives on the prepared device, those compute units);
        `_Failed` with one line when the job, the device or Core ML refuses."""
        self._require()
        timeout = job.protocol.row_timeout_s or None
        try:
            units = self._compute_units(job)
            self._prepared(device)
            return self._run(work(units), timeout), units
        except TimeoutError:
            raise _Failed(f"no result within {timeout:g} s from '{device}' (--row-timeout)") from None
        except PipelineError as e:
            raise _Failed(str(e)) from None
        except Exception as e:  # noqa: BLE001  (what coremltools or the device answers: the model's failure)
            raise _Failed(f"Core ML prediction on '{device}' failed ({first_line(e)})") from None

    def _provenance(self, device: str, job: Job, compute_units: str) -> dict[str, Any]:
        info = self.info.get(device)
        return {"device": device, "backend": self.name, "model": info.model if info else None,
                "os": info.os if info else None, "details": info.details if info else {},
                "runtime": "coremltools", "runtime_version": package_version("coremltools"),
                "compute_units": compute_units, "protocol": asdict(job.protocol),
                "timing": "the device's own duration of each MLModel.prediction (coremltools' modelrunner app)"}

    def measure(self, device: str, job: Job) -> MeasureResult:
        try:
            samples, units = self._on_device(device, job, lambda units: self._time(device, job, units))
        except _Failed as e:
            return MeasureResult(status="failed", reason=str(e))
        # outputs: the modelrunner app returns them, but coremltools' benchmarker keeps them to itself.
        return MeasureResult(status="ok", stats=samples.stats(), outputs=None,
                             provenance=self._provenance(device, job, units))

    def operations_estimated(self, device: str, job: Job) -> dict[str, Any]:
        """Per-operation time of a whole network (`job.artifact`) on `device`, ESTIMATED: coremltools'
        `benchmark_operation_execution` times `protocol.repeats` predictions and gives each operation
        the share of every prediction that Core ML's compute plan estimates for it.

        {"status", "reason", "operations_estimated": [{operation, outputs, path, compute_device,
        supported_devices, estimated_median_ms, estimated_samples_ms}, ...] (costliest first), "provenance"}.
        """
        async def work(units: str) -> list[dict[str, Any]]:
            loaded, _ = await self._open(device, job.artifact, units)
            infos = await loaded.bench.benchmark_operation_execution(
                inputs=_inputs(loaded.bench, job.input), iterations=job.protocol.repeats, warmup=True)
            return [_operation(i) for i in infos]

        try:
            operations, units = self._on_device(device, job, work)
        except _Failed as e:
            return {"status": "failed", "reason": str(e), "operations_estimated": [], "provenance": {}}
        provenance = {**self._provenance(device, job, units), "estimate": OPERATIONS_ESTIMATED_NOTE}
        return {"status": "ok", "reason": "", "operations_estimated": operations, "provenance": provenance}

    def close(self) -> None:
        for ready in self.ready.values():
            if ready.session is not None:
                with contextlib.suppress(Exception):
                    ready.session.stop()
        self.ready.clear()
        self.loaded.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
