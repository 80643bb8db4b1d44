"""The iphone agent backend without an iPhone or a Mac.

The stand-ins sit where coremltools meets the device: `Device`s as coremltools' own dataclass
(what `Device.get_connected_devices` returns), a prepared one holding a real `_AppSession`
around a child process, and coremltools' real `MLModelBenchmarker` whose one replaced part is
`_create_loaded_model`, the place where coremltools compiles a model and loads it in the
modelrunner app on the phone. The stand-in model there reports durations in nanoseconds as the
app does, so coremltools' own code turns them into its `Measurement`s in milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from benchmarks.agent.backends import iphone
from benchmarks.agent.backends.base import BACKENDS, BackendUnavailable, Job, Stored
from benchmarks.agent.backends.iphone import CoreMLToolsDevices, IPhoneBackend
from benchmarks.protocol import Protocol, Samples
from core.errors import PipelineError

TEAM = "ABCDE12345"
PROTOCOL = Protocol(warmup_runs=5, repeats=3, min_repeat_ms=5.0, row_timeout_s=30.0)
NS = 1_000_000  # ns in one ms
ALIASES: dict[str, str] = {}  # a stored model's hash -> the stand-in model it is


@functools.cache
def tools() -> SimpleNamespace:
    """coremltools' experimental tooling and the stand-ins built on its types (imported once:
    coremltools takes seconds to import)."""
    import coremltools
    from coremltools import proto
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )
    from coremltools.models.compute_plan import MLComputePlanDeviceUsage
    from coremltools.models.ml_program.experimental import perf_utils, remote_device
    from coremltools.models.ml_program.experimental.model_structure_path import (
        ModelStructurePath,
    )

    class Benchmarker(perf_utils.MLModelBenchmarker):
        """coremltools' benchmarker, logging its API calls (label, what, iterations)."""

        log: ClassVar[list[tuple[str, str, int]]] = []

        @property
        def label(self) -> str:
            return self.model_spec.description.metadata.shortDescription

        async def benchmark_load(self, iterations: int = 1) -> Any:
            self.log.append((self.label, "load", iterations))
            return await super().benchmark_load(iterations=iterations)

        async def benchmark_predict(self, inputs: Any = None, iterations: int = 1, warmup: bool = False) -> Any:
            self.log.append((self.label, "predict", iterations))
            return await super().benchmark_predict(inputs=inputs, iterations=iterations, warmup=warmup)

        async def benchmark_operation_execution(self, inputs: Any = None, iterations: int = 1,
                                                warmup: bool = False) -> list[Any]:
            # coremltools' own method, with the device's compute plan written out: its proxies
            # (libcoremlpython) exist only on macOS. Same weighting, same result type, same order.
            predicted = await self.benchmark_predict(inputs=inputs, iterations=iterations, warmup=warmup)
            plan = [("conv", "y_conv", 0.75, neural_engine_usage()), ("relu", "y_relu", 0.25, None),
                    ("const", "w", None, None)]
            infos = []
            for op_type, output, weight, usage in plan:
                samples = [] if weight is None else [s * weight for s in predicted.samples]
                op = proto.MIL_pb2.Operation(type=op_type, outputs=[proto.MIL_pb2.NamedValueType(name=output)])
                path = ModelStructurePath(components=(
                    ModelStructurePath.Program(), ModelStructurePath.Program.Function(name="main"),
                    ModelStructurePath.Program.Block(index=0), ModelStructurePath.Program.Operation(output_name=output)))
                infos.append(perf_utils.MLModelBenchmarker.OperationExecutionInfo(
                    spec=op, path=path, compute_device_usage=usage,
                    measurement=perf_utils.MLModelBenchmarker.Measurement.from_samples(samples)))
            return sorted(infos, key=lambda i: i.measurement.sort_key, reverse=True)

    def neural_engine_usage() -> Any:
        # MLComputeDevice's subclasses insist on a native proxy from libcoremlpython, which the
        # Linux wheel lacks: the instances are made without __init__, so isinstance holds.
        ne = MLNeuralEngineComputeDevice.__new__(MLNeuralEngineComputeDevice)
        cpu = MLCPUComputeDevice.__new__(MLCPUComputeDevice)
        return MLComputePlanDeviceUsage(preferred_compute_device=ne, supported_compute_devices=[cpu, ne])

    def spec(label: str, dtype: str = "FLOAT32") -> Any:
        """A one-layer Core ML model whose description carries `label`."""
        kinds = proto.FeatureTypes_pb2.ArrayFeatureType
        s = proto.Model_pb2.Model(specificationVersion=7)
        s.description.metadata.shortDescription = label
        for f, name in ((s.description.input.add(), "x"), (s.description.output.add(), "y")):
            f.name = name
            f.type.multiArrayType.shape.extend([1, 4])
            f.type.multiArrayType.dataType = getattr(kinds, dtype)
        s.neuralNetwork.layers.add(name="same", input=["x"], output=["y"]).activation.linear.alpha = 1.0
        return s

    return SimpleNamespace(coremltools=coremltools, remote=remote_device, perf=perf_utils, Benchmarker=Benchmarker,
                           spec=spec, DeviceCtlError=remote_device._DeviceCtlError)


def device(name: str, identifier: str, kind: str = "IPHONE", os_version: str = "18.1") -> Any:
    r = tools().remote
    return r.Device(name=name, type=getattr(r.DeviceType, kind), identifier=identifier, udid=f"0000-{identifier}",
                    os_version=os_version, os_build_number="22B83", developer_mode_state="enabled",
                    state=r.DeviceState.CONNECTED, session=None)


class StandInDevices:
    """What `CoreMLToolsDevices` does on a Mac, with the phones given."""

    def __init__(self, devices: list[Any], hardware: dict[str, dict] | None = None, fail_prepare: bool = False):
        self.devices, self.hw, self.fail_prepare = devices, hardware or {}, fail_prepare
        self.prepared: list[tuple[str, str]] = []
        self.processes: list[subprocess.Popen] = []

    def unavailable_reason(self) -> None:
        return None

    def connected(self) -> list[Any]:
        return list(self.devices)

    def hardware(self) -> dict[str, dict]:
        return self.hw

    async def prepare(self, dev: Any, team: str, working_directory: Path) -> Any:
        r = tools().remote
        self.prepared.append((dev.name, team))
        if self.fail_prepare:
            raise r._AppBuilder.Error(error_code=65, message=None)  # what coremltools raises when xcodebuild fails
        # coremltools launches the app (`devicectl process launch --console`) from an executor thread
        process = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", "import time; time.sleep(600)"])
        self.processes.append(process)
        session = r._AppSession(device=dev, process=process, working_directory=working_directory,
                                installation_info=r._AppInstallationInfo("com.coremltools.modelrunnerd", "db"))
        return dataclasses.replace(dev, session=session)


class PhoneModels:
    """Stands in for what coremltools' `_create_loaded_model` returns on a device (its
    `RemoteMLModelAsyncWrapper`): durations in ns, one per prediction, as the app reports them."""

    def __init__(self, load_ns: dict[str, int], predict_ns: dict[str, list[int]], fail: dict[str, Exception] | None = None,
                 predict_delay_s: float = 0.0):
        self.load_ns, self.predict_ns = load_ns, {k: iter(v) for k, v in predict_ns.items()}
        self.fail, self.delay = fail or {}, predict_delay_s
        self.inputs: dict[str, list[dict[str, np.ndarray]]] = {}
        self.loops: set[int] = set()
        self.devices: list[Any] = []
        self.unloaded: list[str] = []

    async def create(self, model: Any, device: Any) -> Any:
        label = model.get_spec().description.metadata.shortDescription
        if f"load:{label}" in self.fail:
            raise self.fail[f"load:{label}"]
        self.devices.append(device)
        self.loops.add(id(asyncio.get_running_loop()))  # the app's services keep the loop they load on
        owner = self

        class Loaded:
            load_duration_in_nano_seconds = owner.load_ns[label]
            last_predict_duration_in_nano_seconds = None

            def make_state_if_needed(self) -> None:
                return None

            async def predict(self, inputs: dict[str, np.ndarray], state: Any = None) -> dict[str, np.ndarray]:
                owner.loops.add(id(asyncio.get_running_loop()))
                if f"predict:{label}" in owner.fail:
                    raise owner.fail[f"predict:{label}"]
                await asyncio.sleep(owner.delay)
                owner.inputs.setdefault(label, []).append(inputs)
                self.last_predict_duration_in_nano_seconds = next(owner.predict_ns[label])
                return {"y": inputs["x"]}

            async def unload(self) -> None:
                owner.unloaded.append(label)

        return Loaded()


@pytest.fixture
def phone(monkeypatch: pytest.MonkeyPatch):
    """(make a backend with phone models given, the benchmarker log)."""
    types = tools()
    types.Benchmarker.log = []
    specs = {"art": types.spec("art"), "ref": types.spec("ref", "FLOAT16")}
    made: list[IPhoneBackend] = []

    def factory(path: Path, compute_units: str, prepared: Any) -> Any:
        name = ALIASES.get(path.stem, path.stem)  # an agent stores a model under its hash
        model = types.coremltools.models.MLModel(specs[name], compute_units=types.coremltools.ComputeUnit[compute_units])
        return types.Benchmarker(model=model, device=prepared)

    def make(models: PhoneModels, api: StandInDevices | None = None, **options: Any) -> IPhoneBackend:
        monkeypatch.setattr(types.perf.MLModelBenchmarker, "_create_loaded_model", staticmethod(models.create))
        backend = IPhoneBackend(TEAM, device_api=api or StandInDevices([device("Alice's iPhone", "AAAA1111")]),
                                benchmarker_factory=factory, **options)
        made.append(backend)
        return backend

    yield make, types.Benchmarker.log
    for backend in made:
        backend.close()


def stored(name: str, tmp: Path) -> Stored:
    return Stored(path=tmp / f"{name}.mlpackage", sha256=name[0] * 64, format="mlpackage")


def job(tmp: Path, reference: bool = True, protocol: Protocol = PROTOCOL, **options: Any) -> Job:
    return Job(runner="coreml", runner_options=options, protocol=protocol, artifact=stored("art", tmp),
               input=np.arange(4, dtype=np.float32).reshape(1, 4),
               reference=stored("ref", tmp) if reference else None)


def timings() -> PhoneModels:
    """art: first 9 ms, warm 2 ms (so 3 predictions a repeat reach min_repeat_ms 5), then
    repeats averaging 1.234567, 2.5 and 3 ms; ref: warm 4 ms (2 a repeat), then 4, 4 and 5 ms."""
    art = [9 * NS] + [2 * NS] * 5 + [1_000_000, 1_000_000, 1_703_701] + [2 * NS, 2_500_000, 3 * NS] + [3 * NS] * 3
    ref = [4 * NS] + [4 * NS] * 5 + [3_500_000, 4_500_000] + [4 * NS] * 2 + [5 * NS] * 2
    return PhoneModels({"art": 123_456_789, "ref": 50 * NS}, {"art": art, "ref": ref})


def test_registered_by_the_name_users_type() -> None:
    assert BACKENDS.get("iphone") is IPhoneBackend


def test_devices_maps_connected_iphones_and_ipads(phone) -> None:
    make, _ = phone
    found = [device("Alice's iPhone", "AAAA1111"), device("Lab iPad", "BBBB2222", "IPAD", "17.5"),
             device("Test", "CCCC3333"), device("Test", "DDDD4444")]
    api = StandInDevices(found, {"AAAA1111": {"marketingName": "iPhone 15 Pro", "productType": "iPhone16,1",
                                              "cpuType": {"name": "arm64e"}}})
    listed = {d.id: d for d in make(timings(), api).devices()}
    assert set(listed) == {"Alice_s_iPhone", "Lab_iPad", "Test-CCCC3333", "Test-DDDD4444"}
    alice = listed["Alice_s_iPhone"]
    assert (alice.backend, alice.model, alice.os, alice.runners) == ("iphone", "iPhone 15 Pro", "iOS 18.1", ["coreml"])
    assert alice.runtimes == {"coremltools": tools().coremltools.__version__, "iOS": "18.1"}
    assert alice.details["identifier"] == "AAAA1111" and alice.details["product_type"] == "iPhone16,1"
    assert alice.details["cpu_type"] == "arm64e" and alice.details["developer_mode"] == "enabled"
    ipad = listed["Lab_iPad"]
    assert (ipad.model, ipad.os, ipad.runtimes["iOS"]) == ("iPad", "iPadOS 17.5", "17.5")


def test_measure_loads_once_and_interleaves_artifact_with_reference(phone, tmp_path: Path) -> None:
    make, log = phone
    models = timings()
    api = StandInDevices([device("Alice's iPhone", "AAAA1111")])
    backend = make(models, api, max_number=4)
    result = backend.measure("Alice_s_iPhone", job(tmp_path, compute_units="CPU_AND_NE"))
    assert result.status == "ok", result.reason
    assert log[:2] == [("art", "load", 1), ("ref", "load", 1)]
    assert log[2:6] == [("ref", "predict", 1), ("ref", "predict", 5), ("art", "predict", 1), ("art", "predict", 5)]
    assert log[6:] == [("art", "predict", 3), ("ref", "predict", 2)] * PROTOCOL.repeats
    # coremltools' ns -> ms, then per-prediction ms of each repeat
    expected = Samples((1.234567, 2.5, 3.0), 3, 123.456789, 9.0, (4.0, 4.0, 5.0)).stats()
    assert set(result.stats) == set(expected)
    for key, value in expected.items():
        assert result.stats[key] == pytest.approx(value), key
    assert result.stats["samples_ms"] == [1.234567, 2.5, 3.0] and result.stats["reference_ms"] == [4.0, 4.0, 5.0]
    assert result.outputs is None
    p = result.provenance
    assert (p["device"], p["backend"], p["compute_units"], p["runtime"]) == ("Alice_s_iPhone", "iphone", "CPU_AND_NE", "coremltools")
    assert (p["model"], p["os"], p["runtime_version"]) == ("iPhone", "iOS 18.1", tools().coremltools.__version__)
    assert api.prepared == [("Alice's iPhone", TEAM)]
    assert all(d.session is not None and d.session.is_alive() for d in models.devices)  # the prepared device
    assert len(models.loops) == 1  # every coroutine on the backend's one loop
    assert models.inputs["ref"][0]["x"].dtype == np.float16  # the reference model declares fp16 input
    assert models.inputs["art"][0]["x"].dtype == np.float32


def test_a_second_job_reuses_the_loaded_reference_and_prepared_device(phone, tmp_path: Path) -> None:
    make, log = phone
    art = [9 * NS] + [2 * NS] * 5 + [2 * NS] * 3
    models = PhoneModels({"art": NS, "ref": NS}, {"art": art * 2, "ref": [4 * NS] * 12})
    api = StandInDevices([device("Alice's iPhone", "AAAA1111")])
    backend = make(models, api)
    quick = Protocol(warmup_runs=5, repeats=3, min_repeat_ms=5.0, row_timeout_s=30.0)
    first = backend.measure("Alice_s_iPhone", job(tmp_path, protocol=quick))
    del log[:]
    second = backend.measure("Alice_s_iPhone", job(tmp_path, protocol=quick))
    assert first.status == second.status == "ok"
    assert ("ref", "load", 1) not in log and ("art", "load", 1) not in log
    assert log[:2] == [("art", "predict", 1), ("art", "predict", 5)]  # the reference stays warm
    assert log[2:] == [("art", "predict", 1), ("ref", "predict", 1)] * 3  # max_number 1: one prediction a repeat
    assert second.stats["load_ms"] == 0.0 and first.stats["load_ms"] == 1.0
    assert len(api.prepared) == 1


def test_without_a_reference_only_the_artifact_is_timed(phone, tmp_path: Path) -> None:
    make, log = phone
    result = make(timings(), max_number=4).measure("Alice_s_iPhone", job(tmp_path, reference=False))
    assert result.status == "ok"
    assert {entry[0] for entry in log} == {"art"} and "reference_ms" not in result.stats
    assert result.stats["samples_ms"] == [1.234567, 2.5, 3.0]


def test_operation_times_are_labelled_estimates(phone, tmp_path: Path) -> None:
    make, log = phone
    models = PhoneModels({"art": NS}, {"art": [10 * NS] * 4})
    answer = make(models).operations_estimated("Alice_s_iPhone", job(tmp_path, reference=False))
    assert answer["status"] == "ok" and "estimate" in answer["provenance"]
    assert "estimated" in iphone.OPERATIONS_ESTIMATED_NOTE
    ops = answer["operations_estimated"]
    assert [o["operation"] for o in ops] == ["conv", "relu", "const"]  # costliest first, as coremltools sorts
    conv = ops[0]
    assert conv["estimated_median_ms"] == pytest.approx(7.5) and conv["estimated_samples_ms"] == pytest.approx([7.5] * 3)
    assert (conv["compute_device"], conv["supported_devices"], conv["path"]) == ("NeuralEngine", ["CPU", "NeuralEngine"], "main/0/y_conv")
    assert ops[2]["estimated_median_ms"] is None and ops[2]["compute_device"] is None
    assert all(not k.endswith("_ms") or k.startswith("estimated_") for o in ops for k in o)
    assert log == [("art", "load", 1), ("art", "predict", PROTOCOL.repeats)]  # warmup=True: 1 more, untimed


@pytest.mark.parametrize("where, error, reason", [
    ("load:art", lambda: ValueError("Failed to load model"),
     "'Alice_s_iPhone' could not load the model (ValueError: Failed to load model)"),
    ("predict:art", lambda: tools().DeviceCtlError(error_code=-32001, message="The model is not loaded.\nDetails"),
     "Core ML prediction on 'Alice_s_iPhone' failed (_DeviceCtlError: [Error Code -32001] The model is not loaded.)"),
])
def test_a_load_or_prediction_failure_is_a_failed_result(phone, tmp_path: Path, where: str, error: Any,
                                                          reason: str) -> None:
    make, _ = phone
    models = timings()
    models.fail = {where: error()}
    result = make(models).measure("Alice_s_iPhone", job(tmp_path))
    assert result.status == "failed" and reason in result.reason and "\n" not in result.reason
    assert result.stats == {}


def test_failed_preparation_names_the_team_and_the_device_settings(phone, tmp_path: Path) -> None:
    make, _ = phone
    api = StandInDevices([device("Alice's iPhone", "AAAA1111")], fail_prepare=True)
    result = make(timings(), api).measure("Alice_s_iPhone", job(tmp_path))
    assert result.status == "failed"
    assert "modelrunner app" in result.reason and TEAM in result.reason and "Developer Mode" in result.reason


def test_unknown_device_wrong_runner_and_hung_prediction_are_failed_results(phone, tmp_path: Path) -> None:
    make, _ = phone
    backend = make(timings())
    missing = backend.measure("Bobs_iPhone", job(tmp_path))
    assert missing.status == "failed" and "no connected iPhone or iPad 'Bobs_iPhone'" in missing.reason
    assert "Alice_s_iPhone" in missing.reason
    wrong = backend.measure("Alice_s_iPhone", dataclasses.replace(job(tmp_path), runner="litert"))
    assert wrong.status == "failed" and "'coreml' runner only" in wrong.reason
    units = backend.measure("Alice_s_iPhone", job(tmp_path, compute_units="GPU_ONLY"))
    assert units.status == "failed" and "CPU_AND_NE" in units.reason
    slow = PhoneModels({"art": NS, "ref": NS}, {"art": [NS] * 100, "ref": [NS] * 100}, predict_delay_s=2.0)
    hung = make(slow).measure("Alice_s_iPhone", job(tmp_path, protocol=dataclasses.replace(PROTOCOL, row_timeout_s=0.3)))
    assert hung.status == "failed" and "no result within 0.3 s" in hung.reason


def test_close_stops_the_app_sessions(phone, tmp_path: Path) -> None:
    make, _ = phone
    api = StandInDevices([device("Alice's iPhone", "AAAA1111")])
    backend = make(timings(), api, max_number=4)
    assert backend.measure("Alice_s_iPhone", job(tmp_path)).status == "ok"
    backend.close()
    assert api.processes[0].wait(timeout=10) is not None
    assert backend._loop is None


@pytest.mark.skipif(sys.platform == "darwin", reason="a Mac may have what the backend needs")
def test_off_macos_the_backend_is_unavailable_with_one_line() -> None:
    backend = IPhoneBackend(TEAM)
    with pytest.raises(BackendUnavailable) as e:
        backend.devices()
    assert str(e.value) == ("the iphone backend needs a Mac with Xcode: run 'pipeline agent' on the Mac "
                            "the iPhone is attached to")
    with pytest.raises(BackendUnavailable):
        backend.measure("Alice_s_iPhone", job(Path("/nonexistent")))


def test_unavailable_on_a_mac_without_devicectl_or_coremltools_9(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iphone.sys, "platform", "darwin")
    monkeypatch.setattr(iphone.shutil, "which", lambda name: None)
    assert "'xcrun devicectl' is missing" in CoreMLToolsDevices().unavailable_reason()
    monkeypatch.setattr(iphone.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(iphone.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "/x/devicectl\n", ""))

    def old_coremltools(module: str) -> Any:
        raise ModuleNotFoundError(f"No module named '{module}'")

    monkeypatch.setattr(iphone, "quiet_import", old_coremltools)
    reason = CoreMLToolsDevices().unavailable_reason()
    assert "lacks coremltools.models.ml_program.experimental" in reason and "coremltools>=9.0" in reason


def test_unavailable_without_a_team_or_a_phone_and_a_bad_team_is_refused() -> None:
    with pytest.raises(BackendUnavailable, match="iphone.team=TEAMID"):
        IPhoneBackend(device_api=StandInDevices([])).devices()
    with pytest.raises(BackendUnavailable, match="no iPhone or iPad connected"):
        IPhoneBackend(TEAM, device_api=StandInDevices([])).devices()
    assert IPhoneBackend(1234567890).team == "1234567890"  # --backend-option values are read as YAML
    with pytest.raises(PipelineError, match="not 10 capital letters"):
        IPhoneBackend("ABC; rm -rf ~")
    with pytest.raises(PipelineError, match="CPU_AND_NE"):
        IPhoneBackend(TEAM, compute_units="NE")


@pytest.mark.slow
def test_the_default_benchmarker_is_coremltools_own(tmp_path: Path) -> None:
    import torch

    from export import EXPORTERS

    artifact = EXPORTERS.get("coreml")().export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.zeros(1, 3, 8, 8),),
                                                tmp_path / "conv.mlpackage")
    bench = iphone.coremltools_benchmarker(artifact.path, "CPU_AND_NE", None)
    assert isinstance(bench, tools().perf.MLModelBenchmarker)
    assert bench.compute_units == tools().coremltools.ComputeUnit.CPU_AND_NE
    assert list(iphone._inputs(bench, np.zeros((1, 3, 8, 8)))) == [bench.model_spec.description.input[0].name]


def test_through_the_agent_s_http_api(phone, tmp_path: Path) -> None:
    """A client's view: .mlpackage folders sent as tars, timed on the stand-in iPhone, and the
    per-operation estimates, through the agent's routes."""
    from fastapi.testclient import TestClient

    from benchmarks.agent.server import AgentSettings, create_app
    from benchmarks.agent.wire import Array, MeasureRequest, ProtocolSpec, digest, pack

    make, log = phone
    backend = make(timings())
    client = TestClient(create_app(AgentSettings("t", tmp_path / "store", [backend])))
    auth = {"Authorization": "Bearer t"}
    hashes = {}
    for name in ("art", "ref"):
        folder = tmp_path / f"{name}.mlpackage"
        folder.mkdir()
        (folder / "Manifest.json").write_text(name)
        data = pack(folder)
        hashes[name] = digest(data)
        ALIASES[hashes[name]] = name
        r = client.put(f"/v1/artifacts/{hashes[name]}", content=data,
                       headers={**auth, "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    (dev,) = client.get("/v1/devices", headers=auth).json()["devices"]
    assert dev["backend"] == "iphone" and dev["runners"] == ["coreml"]
    x = Array.of(np.arange(4, dtype=np.float32).reshape(1, 4))
    request = MeasureRequest(device=dev["id"], runner="coreml", format="mlpackage", artifact=hashes["art"], input=x,
                             reference=hashes["ref"], reference_input=x,
                             protocol=ProtocolSpec(warmup_runs=5, repeats=3, min_repeat_ms=5.0, row_timeout_s=30.0))
    r = client.post("/v1/measure", content=request.model_dump_json(), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == "ok" and result["outputs"] is None
    # one prediction a repeat (the backend's default), so the stand-in's next three durations
    assert result["stats"]["samples_ms"] == pytest.approx([1.0, 1.0, 1.703701])
    assert len(result["stats"]["reference_ms"]) == 3 and result["provenance"]["backend"] == "iphone"
    r = client.post("/v1/operations", content=request.model_copy(update={"reference": None, "reference_input": None})
                    .model_dump_json(), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    ops = r.json()
    assert ops["status"] == "ok" and "estimate" in ops["provenance"]
    assert [o["operation"] for o in ops["operations_estimated"]] == ["conv", "relu", "const"]
