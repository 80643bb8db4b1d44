"""The agent's adb backend against a stand-in adb server (`tests.adb_standin`): no phone needed.

The stand-in phones answer `benchmark_model` with genuine logs posted in public issue threads
(`tests/data/benchmark_model/README.md` says where each comes from)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.agent.backends import adb
from benchmarks.agent.backends.adb import AdbBackend
from benchmarks.agent.backends.base import BACKENDS, BackendUnavailable, Job, Stored
from benchmarks.protocol import Protocol
from benchmarks.runners.executorch import parse_executor_runner
from benchmarks.runners.litert import parse_benchmark_model
from core.errors import PipelineError
from tests.adb_standin import AdbStandIn, free_port

LOGS = Path(__file__).parent / "data" / "benchmark_model"
OLD_2020 = (LOGS / "tflite-2020-tensorflow-42507.log").read_text()  # Inference (avg): 33209.4 µs
OLD_2021 = (LOGS / "tflite-2021-tensorflow-models-10006.log").read_text()  # Inference (avg): 211509 µs
LITERT_2 = (LOGS / "litert-2.1.5-mlcommons-1134.log").read_text()  # Inference (avg): 7430.20 ms (10 runs)
ET_2023 = (LOGS / "executor_runner-2023-executorch-1231.log").read_text()  # no time printed

PIXEL, OLD_PHONE, LOCKED = "28031FDH2004YZ", "10.0.0.5:5555", "R58M123ABC"
FOLDER = adb.DEFAULT_FOLDER
BM, ER = adb.BENCHMARK_MODEL.default_path, adb.EXECUTOR_RUNNER.default_path

THERMALSERVICE = """\
IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
ThermalStatusListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
Thermal Status: {}
"""


class Phone:
    """A stand-in phone's shell: its properties, cores, thermal status and tools; a tool run
    answers the log `logs` holds for the model file it was given."""

    def __init__(self, props: dict[str, str], freqs: list[int], tools: tuple[str, ...] = (BM, ER),
                 thermal: list[int] | None = None) -> None:
        self.props, self.freqs, self.tools = props, freqs, tools
        self.thermal = list(thermal or [0])  # one status per query; the last one repeats
        self.logs: dict[str, tuple[str, int]] = {}  # model path on the phone -> (log, exit code)
        self.executor_ms = 2.5  # executor_runner's ms per execution, for its hand-written log

    def __call__(self, command: str) -> tuple[str, int]:
        if command == adb.PROPS_CMD:
            return "".join(f"[{k}]: [{v}]\n" for k, v in self.props.items()), 0
        if command == adb.CORES_CMD:
            return "".join(f"{i} {f}\n" for i, f in enumerate(self.freqs)), 0
        if command == adb.GOVERNOR_CMD:
            return "schedutil\n", 0
        if command == adb.THERMAL_CMD:
            status = self.thermal.pop(0) if len(self.thermal) > 1 else self.thermal[0]
            return THERMALSERVICE.format(status), 0
        if command.startswith("test -x "):
            return "", 0 if command.split()[-1] in self.tools else 1
        if command.startswith("mkdir -p "):
            return "", 0
        if m := re.search(r"--graph=(\S+)", command):
            return self.logs.get(m.group(1), ("ERROR: Could not open model\n", 1))
        if m := re.search(r"--model_path=(\S+) --num_executions=(\d+)", command):
            if m.group(1) in self.logs:
                return self.logs[m.group(1)]
            n = int(m.group(2))  # the format ExecuTorch 0.4+ prints, written by hand (see the data README)
            return (f"I 00:00:00.001000 executorch:executor_runner.cpp:100] Model file {m.group(1)} is loaded.\n"
                    f"I 00:00:00.013500 executorch:executor_runner.cpp:150] Method loaded.\n"
                    f"I 00:00:00.100000 executorch:executor_runner.cpp:250] Model executed successfully {n} "
                    f"time(s) in {n * self.executor_ms:f} ms.\n"), 0
        return f"/system/bin/sh: {command.split()[0]}: inaccessible or not found\n", 127


PIXEL_PROPS = {"ro.product.model": "Pixel 7", "ro.product.manufacturer": "Google", "ro.build.version.release": "14",
               "ro.build.version.sdk": "34", "ro.soc.manufacturer": "Google", "ro.soc.model": "GS201",
               "ro.board.platform": "gs201", "ro.product.cpu.abi": "arm64-v8a"}
OLD_PROPS = {"ro.product.model": "Redmi Note 8", "ro.product.manufacturer": "Xiaomi", "ro.build.version.release": "10",
             "ro.build.version.sdk": "29", "ro.board.platform": "trinket", "ro.hardware": "qcom",
             "ro.product.cpu.abi": "arm64-v8a"}


@pytest.fixture
def phones():
    return {PIXEL: Phone(PIXEL_PROPS, [1803000] * 4 + [2348000] * 2 + [2850000] * 2),
            OLD_PHONE: Phone(OLD_PROPS, [1800000] * 4 + [2000000] * 4, tools=(BM,))}


@pytest.fixture
def standin(phones):
    states = {PIXEL: "device", OLD_PHONE: "device", LOCKED: "unauthorized"}
    with AdbStandIn(states, lambda serial, command: phones[serial](command)) as server:
        yield server


@pytest.fixture
def backend(standin):
    b = AdbBackend(port=standin.port, thermal_wait_s=0.2, thermal_poll_s=0.01)
    yield b
    b.close()


def stored(tmp_path: Path, data: bytes, fmt: str = "tflite") -> Stored:
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / sha
    path.write_bytes(data)
    return Stored(path, sha, fmt)


def job(artifact: Stored, reference: Stored | None = None, runner: str = "litert", **protocol) -> Job:
    protocol = {"repeats": 4, "threads": 2, **protocol}
    return Job(runner, {}, Protocol(**protocol), artifact, np.zeros((1, 3, 8, 8), np.float32), reference)


# ---------------------------------------------------------------------------- the genuine logs
@pytest.mark.parametrize("text, ms", [(OLD_2020, 33.2094), (OLD_2021, 211.509), (LITERT_2, 7430.20)])
def test_each_genuine_benchmark_model_log_parses_to_its_ms_per_run(text: str, ms: float) -> None:
    assert parse_benchmark_model(text) == pytest.approx(ms)


def test_the_tools_report_load_first_run_and_count_in_each_format() -> None:
    assert adb.load_and_first_ms(OLD_2020) == pytest.approx((0.855, 49.06))
    assert adb.load_and_first_ms(LITERT_2) == pytest.approx((23744.73, 7441.04))
    assert adb.load_and_first_ms(ET_2023)[0] == pytest.approx(54.875)  # "Method loaded" - "Model file ... loaded"
    assert (adb.timed_runs(OLD_2020), adb.timed_runs(LITERT_2)) == (50, 10)


def test_an_executor_runner_that_prints_no_time_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="-DEXECUTORCH_ENABLE_LOGGING=ON"):
        parse_executor_runner(ET_2023)


def test_a_litert_2_log_cut_before_its_summary_did_not_finish() -> None:
    with pytest.raises(ValueError, match="did not finish"):
        parse_benchmark_model(LITERT_2.split("========== BENCHMARK RESULTS")[0])


# ---------------------------------------------------------------------------- devices
def test_devices_reports_each_ready_phone_with_its_soc_android_governor_and_thermal_status(backend) -> None:
    assert BACKENDS.get("adb") is AdbBackend
    found = {d.id: d for d in backend.devices()}
    assert set(found) == {PIXEL, "10.0.0.5_5555"}  # the unauthorized phone is not offered
    pixel, old = found[PIXEL], found["10.0.0.5_5555"]
    assert (pixel.backend, pixel.model, pixel.os) == ("adb", "Pixel 7", "Android 14 (SDK 34)")
    assert pixel.runners == ["executorch", "litert"] and pixel.runtimes == {"ai-edge-litert": BM, "executorch": ER}
    assert pixel.details | {"max_freq_khz": None} == {
        "serial": PIXEL, "manufacturer": "Google", "soc": "Google GS201", "abi": "arm64-v8a", "governor": "schedutil",
        "thermal_status": 0, "cores": 8, "max_freq_khz": None}
    assert (old.details["soc"], old.details["serial"], old.runners) == ("trinket", OLD_PHONE, ["litert"])


def test_no_adb_server_is_unavailable_with_a_one_line_fix() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as e:
        AdbBackend(port=port).devices()
    assert str(e.value) == (f"no adb server at 127.0.0.1:{port}: install Android platform-tools and run "
                            "'adb start-server'")


def test_no_ready_phone_is_unavailable_and_says_why() -> None:
    with (AdbStandIn({LOCKED: "unauthorized"}, lambda s, c: ("", 0)) as server,
          pytest.raises(BackendUnavailable, match=f"{LOCKED} is unauthorized: unlock it and accept")):
        AdbBackend(port=server.port).devices()


def test_a_device_path_a_shell_would_split_is_refused_at_construction() -> None:
    with pytest.raises(PipelineError, match="adb option benchmark_model='/data/local/tmp/bm; reboot' is not an"):
        AdbBackend(benchmark_model="/data/local/tmp/bm; reboot")


def test_the_serial_option_offers_that_phone_alone(standin) -> None:
    assert [d.id for d in AdbBackend(port=standin.port, serial=PIXEL).devices()] == [PIXEL]
    with pytest.raises(BackendUnavailable, match="connect 123 with USB debugging on"):
        AdbBackend(port=standin.port, serial=123).devices()  # a serial YAML read as a number


# ---------------------------------------------------------------------------- measure
def test_measure_pushes_once_and_interleaves_the_reference_on_the_fastest_cores(backend, standin, phones,
                                                                               tmp_path: Path) -> None:
    art, ref = stored(tmp_path, b"TFL3 block"), stored(tmp_path, b"TFL3 reference")
    model, reference = f"{FOLDER}/{art.sha256}.tflite", f"{FOLDER}/{ref.sha256}.tflite"
    phones[PIXEL].logs = {model: (OLD_2020, 0), reference: (OLD_2021, 0)}
    backend.devices()

    r = backend.measure(PIXEL, job(art, ref))
    assert r.status == "ok", r.reason
    assert standin.pushed == [(PIXEL, model, b"TFL3 block"), (PIXEL, reference, b"TFL3 reference")]
    assert r.stats["median_ms"] == pytest.approx(33.2094) and r.stats["samples_ms"] == [33.2094] * 4
    assert r.stats["reference_ms"] == [211.509] * 4 and r.stats["ratio"] == pytest.approx(33.2094 / 211.509)
    assert (r.stats["number"], r.stats["load_ms"], r.stats["first_ms"]) == (50, 0.855, 49.06)
    runs = [c for c in standin.shell(PIXEL) if BM in c and not c.startswith("test")]
    assert [model if model in c else reference for c in runs] == [model, reference] * 4
    assert all(c.startswith(f"taskset c0 {BM} --graph=") for c in runs)  # cpu6 and cpu7, the 2.85 GHz pair
    assert runs[0] == (f"taskset c0 {BM} --graph={model} --num_threads=2 --use_xnnpack=true --warmup_runs=5 "
                       "--warmup_min_secs=0.02 --num_runs=1 --min_secs=0.005")
    p = r.provenance
    assert (p["cores"], p["mask"], p["threads"], p["serial"], p["soc"], p["android"], p["governor"]) == (
        [6, 7], "c0", 2, PIXEL, "Google GS201", "Android 14 (SDK 34)", "schedutil")
    assert (p["thermal_before"], p["thermal_after"], p["command"], p["tool_path"]) == (0, 0, runs[0], BM)

    again = backend.measure(PIXEL, job(art, ref, repeats=3))
    assert again.status == "ok" and len(standin.pushed) == 2  # same hashes, same sizes: nothing sent
    assert f"host:tport:serial:{PIXEL}" in standin.requests


def test_a_partial_file_of_the_same_name_is_pushed_again(backend, standin, phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"TFL3 a larger block")
    model = f"{FOLDER}/{art.sha256}.tflite"
    standin.files[(PIXEL, model)] = b"TFL3 a lar"  # an earlier push cut short
    phones[PIXEL].logs = {model: (OLD_2020, 0)}
    assert backend.measure(PIXEL, job(art)).status == "ok"
    assert standin.pushed == [(PIXEL, model, b"TFL3 a larger block")]


def test_the_newer_litert_log_is_timed_in_ms_and_counted_from_its_block(backend, phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"TFL3 llm")
    phones[PIXEL].logs = {f"{FOLDER}/{art.sha256}.tflite": (LITERT_2, 0)}
    r = backend.measure(PIXEL, job(art, threads=1, pin=False))
    assert r.status == "ok", r.reason
    assert (r.stats["median_ms"], r.stats["number"], r.stats["load_ms"]) == (7430.20, 10, 23744.73)
    assert r.provenance["mask"] is None and r.provenance["command"].startswith(f"{BM} --graph=")


def test_executorch_warms_up_then_runs_enough_executions_to_fill_a_repeat(backend, standin, tmp_path: Path) -> None:
    art = stored(tmp_path, b"PTE program", "pte")
    r = backend.measure(PIXEL, job(art, runner="executorch", threads=1, min_repeat_ms=10.0))
    assert r.status == "ok", r.reason
    runs = [c for c in standin.shell(PIXEL) if ER in c and not c.startswith("test")]
    model = f"{FOLDER}/{art.sha256}.pte"
    assert runs[0] == f"taskset 80 {ER} --model_path={model} --num_executions=5 --cpu_threads=1"  # the warm-up
    assert runs[1:] == [f"taskset 80 {ER} --model_path={model} --num_executions=4 --cpu_threads=1"] * 4  # 10 ms / 2.5
    assert (r.stats["median_ms"], r.stats["number"], r.stats["load_ms"]) == (2.5, 4, pytest.approx(12.5))


def test_a_failing_tool_is_a_failed_result_naming_the_exit_code(backend, phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"not a flatbuffer")  # no log for it: the phone's tool fails
    r = backend.measure(PIXEL, job(art))
    assert r.status == "failed" and "\n" not in r.reason
    assert "failed on the phone (exit code 1): ERROR: Could not open model" in r.reason
    assert f"adb -s {PIXEL} shell" in r.reason


def test_a_log_without_a_time_is_a_failed_result_with_the_parsers_fix(backend, phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"PTE old", "pte")
    phones[PIXEL].logs = {f"{FOLDER}/{art.sha256}.pte": (ET_2023, 0)}
    r = backend.measure(PIXEL, job(art, runner="executorch"))
    assert r.status == "failed" and "holds no time" in r.reason and "-DEXECUTORCH_PAL_DEFAULT=posix" in r.reason


def test_a_runner_the_phone_lacks_or_a_wrong_format_is_a_failed_result(backend, tmp_path: Path) -> None:
    r = backend.measure("10.0.0.5_5555", job(stored(tmp_path, b"PTE", "pte"), runner="executorch"))
    assert r.status == "failed" and r.reason.startswith(f"no executable executor_runner at {ER} on 10.0.0.5_5555")
    r = backend.measure(PIXEL, job(stored(tmp_path, b"ONNX", "onnx")))
    assert r.status == "failed" and "runs tflite files, not 'onnx'" in r.reason
    r = backend.measure(PIXEL, job(stored(tmp_path, b"ONNX", "onnx"), runner="onnxruntime"))
    assert r.status == "failed" and "has no timer on Android phones" in r.reason


def test_an_unknown_device_is_an_error_naming_the_devices(backend, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"no Android device 'pixel-9' .* pick one of \['10.0.0.5_5555', "):
        backend.measure("pixel-9", job(stored(tmp_path, b"x")))


def test_a_hot_phone_is_waited_for_and_the_wait_recorded(backend, phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"TFL3 hot")
    phones[PIXEL].logs = {f"{FOLDER}/{art.sha256}.tflite": (OLD_2020, 0)}
    phones[PIXEL].thermal = [3, 3, 1]
    p = backend.measure(PIXEL, job(art)).provenance
    assert (p["thermal_before"], p["thermal_at_start"], p["thermal_after"]) == (3, 1, 1) and p["thermal_waited_s"] > 0
    phones[PIXEL].thermal = [4]  # never cools: timed after thermal_wait_s, and the status says so
    p = backend.measure(PIXEL, job(art)).provenance
    assert (p["thermal_before"], p["thermal_at_start"]) == (4, 4) and p["thermal_waited_s"] >= 0.2


def test_an_old_adb_server_is_spoken_to_with_host_transport(phones, tmp_path: Path) -> None:
    art = stored(tmp_path, b"TFL3 old server")
    phones[PIXEL].logs = {f"{FOLDER}/{art.sha256}.tflite": (OLD_2021, 0)}
    with AdbStandIn({PIXEL: "device"}, lambda s, c: phones[s](c), version=40) as server:
        r = AdbBackend(port=server.port).measure(PIXEL, job(art))
    assert r.status == "ok" and r.stats["median_ms"] == pytest.approx(211.509)
    assert f"host:transport:{PIXEL}" in server.requests and not any("tport" in q for q in server.requests)
