"""Android phones over adb as devices: the runtimes' own command-line timers, already on the
phone (LiteRT's `benchmark_model`, ExecuTorch's `executor_runner`), time the pushed artifacts.

How a `Protocol` becomes tool runs. Each of the protocol's `repeats` is one run of the tool (a
fresh process that loads the model) and gives one sample, the tool's own time per inference; with
a reference, every run of the artifact is followed by one of the reference's, as a local table
interleaves them.

- benchmark_model: `--warmup_runs=warmup_runs --warmup_min_secs=warmup_ms/1000` warm up, then
  `--num_runs=1 --min_secs=min_repeat_ms/1000` time as many runs as fill `min_repeat_ms` (TVM's
  rule, as `benchmarks.protocol` applies it locally); the sample is their median
  (`parse_benchmark_model`), `number` their count. `--num_threads=threads`, and
  `--use_xnnpack` from the litert runner's `xnnpack` option.
- executor_runner has no warm-up and no time limit: one untimed run of `max(1, warmup_runs)`
  executions warms the phone up and tells how many executions fill `min_repeat_ms`; every
  repeat then runs that many (`--num_executions`), `--cpu_threads=threads`.

With `pin` (the default) the tool runs under `taskset` on the `threads` fastest cores (highest
`cpuinfo_max_freq`), so a run neither migrates nor lands on a little core. `row_timeout_s`
bounds each tool run. The tools feed the model random inputs and return no outputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from adbutils import AdbClient, AdbDevice, AdbError, AdbTimeout

from benchmarks.agent.backends.base import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    Job,
    Stored,
    device_id,
)
from benchmarks.agent.wire import HASH, DeviceInfo, MeasureResult
from benchmarks.protocol import Protocol, Samples
from benchmarks.runners.base import RUNNERS, DeviceTool
from benchmarks.runners.executorch import EXECUTOR_RUNNER
from benchmarks.runners.litert import BENCHMARK_MODEL
from core.errors import PipelineError, first_line

log = logging.getLogger(__name__)

DEFAULT_FOLDER = "/data/local/tmp/pipeline"
THERMAL_MODERATE = 2  # Android's THERMAL_STATUS_MODERATE: the phone has begun to throttle
MAX_EXECUTIONS = 1 << 16  # the same cap as the local protocol's calls per repeat
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 60.0  # one adb answer other than a tool run (those get row_timeout_s)

# What the backend asks a phone's shell; the tests' stand-in phone answers the same strings.
PROPS_CMD = "getprop"
CORES_CMD = ('for c in /sys/devices/system/cpu/cpu[0-9]*; do '
             'echo "${c##*cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)"; done')
GOVERNOR_CMD = "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
THERMAL_CMD = "dumpsys thermalservice"

TOOLS: dict[str, DeviceTool] = {"litert": BENCHMARK_MODEL, "executorch": EXECUTOR_RUNNER}
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]+")


@dataclass(frozen=True)
class _Phone:
    """What `devices()` learnt about one phone."""

    serial: str
    info: DeviceInfo
    tools: dict[str, str]  # runner -> path of its tool, for the tools the phone has
    cores: tuple[tuple[int, int], ...]  # (cpu, cpuinfo_max_freq in kHz)


@dataclass(frozen=True)
class _Run:
    """One artifact's tool runs: the command every repeat runs and what each run printed."""

    command: str
    parse: Callable[[str], float]
    number: int = 0  # executor_runner's executions per run; benchmark_model counts its own


def _failed(reason: str) -> MeasureResult:
    return MeasureResult(status="failed", reason=reason)


def _parse(run: _Run, text: str) -> float:
    try:
        return run.parse(text)
    except ValueError as e:
        raise PipelineError(f"the log of '{run.command}' holds no time: {e}") from None


def _sh(dev: AdbDevice, command: str) -> str:
    """A short query's output (not a tool run: those have `row_timeout_s`)."""
    return dev.shell(command, timeout=SOCKET_TIMEOUT_S)


def _props(text: str) -> dict[str, str]:
    """`getprop`'s `[key]: [value]` lines."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.MULTILINE))


def _core_speeds(text: str) -> tuple[tuple[int, int], ...]:
    """`CORES_CMD`'s `cpu max_kHz` lines (a core whose frequency is unreadable counts as 0)."""
    cores = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            cores.append((int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0))
    return tuple(sorted(cores))


def fastest_cores(cores: tuple[tuple[int, int], ...], n: int) -> list[int]:
    """The `n` cores with the highest maximum frequency; among equals the highest-numbered
    (a phone's big cores come last)."""
    ranked = sorted(cores, key=lambda c: (-c[1], -c[0]))
    return sorted(c for c, _ in ranked[:max(n, 1)])


def thermal_status(text: str) -> int | None:
    """`dumpsys thermalservice`'s `Thermal Status: N` (0 none ... 6 shutdown), None when absent."""
    m = re.search(r"Thermal Status:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def _soc(props: dict[str, str]) -> str:
    soc = " ".join(v for v in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if v)
    return soc or props.get("ro.board.platform") or props.get("ro.hardware") or "unknown"


def timed_runs(text: str) -> int:
    """How many timed runs a benchmark_model log averages: its last `count=` (TFLite) or
    `Inference (avg): ... (N runs)` (LiteRT 2.x)."""
    counts = re.findall(r"\bcount=(\d+)", text) or re.findall(r"Inference \(avg\):.*\((\d+) runs\)", text)
    return int(counts[-1]) if counts else 1


def load_and_first_ms(text: str) -> tuple[float, float]:
    """(model load ms, first inference ms) as the tool reports them; 0 where it does not."""
    m = re.search(r"Init: ([0-9.eE+-]+), First inference: ([0-9.eE+-]+)", text)  # TFLite, in µs
    if m:
        return float(m.group(1)) / 1e3, float(m.group(2)) / 1e3
    init = re.search(r"Model initialization:\s*([0-9.eE+-]+) ms", text)  # LiteRT 2.x
    first = re.search(r"Warmup \(first\):\s*([0-9.eE+-]+) ms", text)
    if init and first:
        return float(init.group(1)), float(first.group(1))
    stamps = {what: int(h) * 3600e3 + int(mi) * 60e3 + float(sec) * 1e3  # executor_runner's log clock
              for h, mi, sec, what in re.findall(r"^I (\d+):(\d+):([0-9.]+) .*?\] (Model file|Method loaded)",
                                                 text, re.MULTILINE)}
    if len(stamps) == 2:
        return stamps["Method loaded"] - stamps["Model file"], 0.0
    return 0.0, 0.0


@BACKENDS.register("adb")
class AdbBackend(Backend):
    """Android phones on an adb server. Each phone's id is its serial made wire-safe."""

    name = "adb"

    def __init__(self, host: str = "127.0.0.1", port: int = 5037, *, serial: str | None = None,
                 benchmark_model: str = BENCHMARK_MODEL.default_path,
                 executor_runner: str = EXECUTOR_RUNNER.default_path,
                 folder: str = DEFAULT_FOLDER, thermal_wait_s: float = 60.0, thermal_poll_s: float = 5.0) -> None:
        """Options (`--backend-option adb.KEY=VALUE`): the adb server's `host` and `port`; `serial`,
        one phone only (every ready phone when None); where the tools are on the phones; the
        `folder` artifacts are pushed to; how long to wait for a hot phone to cool."""
        for what, path in (("benchmark_model", benchmark_model), ("executor_runner", executor_runner),
                           ("folder", folder)):
            if not isinstance(path, str) or not _SAFE_PATH.fullmatch(path):
                raise PipelineError(f"adb option {what}={path!r} is not an absolute device path of letters, digits "
                                    "and ._/+-: give one such as /data/local/tmp/...")
        self.host, self.port = str(host), int(port)
        self.serial = None if serial is None else str(serial)  # an all-digit serial arrives from YAML as an int
        self.tools = {"litert": benchmark_model, "executorch": executor_runner}
        self.folder = folder.rstrip("/")
        self.thermal_wait_s, self.thermal_poll_s = float(thermal_wait_s), float(thermal_poll_s)
        self.client = AdbClient(host=self.host, port=self.port, socket_timeout=SOCKET_TIMEOUT_S)
        self.phones: dict[str, _Phone] = {}  # by device id

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _server_down(self) -> str | None:
        """Why the adb server cannot be reached, or None. Checked before adbutils connects: on a
        refused connection adbutils would start a local adb server of its own."""
        try:
            socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S).close()
            return None
        except OSError:
            return f"no adb server at {self.address}: install Android platform-tools and run 'adb start-server'"

    # ------------------------------------------------------------------ devices
    def devices(self) -> list[DeviceInfo]:
        down = self._server_down()
        if down:
            raise BackendUnavailable(down)
        try:
            listed = self.client.list()
        except AdbError as e:
            raise BackendUnavailable(f"the adb server at {self.address} did not answer ({first_line(e)}): "
                                     "restart it with 'adb kill-server; adb start-server'") from None
        if self.serial is not None:
            listed = [e for e in listed if e.serial == self.serial]
        phones = {}
        for entry in listed:
            if entry.state != "device":
                log.warning("adb device %s is %s, not ready: unlock it and accept its USB debugging prompt",
                            entry.serial, entry.state)
                continue
            try:
                phone = self._describe(entry.serial)
            except AdbError as e:
                log.warning("adb device %s did not answer (%s); skipped", entry.serial, first_line(e))
                continue
            phones[phone.info.id] = phone
        self.phones = phones
        if not phones:
            states = ", ".join(f"{e.serial} is {e.state}" for e in listed)
            raise BackendUnavailable(f"no Android device ready on the adb server at {self.address} ("
                                     + (f"{states}: unlock it and accept its USB debugging prompt" if states else
                                        f"connect {self.serial or 'a phone'} with USB debugging on; 'adb devices' "
                                        "lists them") + ")")
        return [p.info for p in phones.values()]

    def _describe(self, serial: str) -> _Phone:
        dev = self.client.device(serial)
        props = _props(_sh(dev, PROPS_CMD))
        cores = _core_speeds(_sh(dev, CORES_CMD))
        tools = {r: p for r, p in self.tools.items()
                 if dev.shell2(f"test -x {shlex.quote(p)}", timeout=SOCKET_TIMEOUT_S).returncode == 0}
        details = {"serial": serial, "manufacturer": props.get("ro.product.manufacturer", "unknown"),
                   "soc": _soc(props), "abi": props.get("ro.product.cpu.abi", "unknown"),
                   "governor": _sh(dev, GOVERNOR_CMD).strip() or "unknown",
                   "thermal_status": thermal_status(_sh(dev, THERMAL_CMD)), "cores": len(cores),
                   "max_freq_khz": {str(c): f for c, f in cores}}
        info = DeviceInfo(id=device_id(serial), backend=self.name, model=props.get("ro.product.model", "unknown"),
                          os=f"Android {props.get('ro.build.version.release', '?')} "
                             f"(SDK {props.get('ro.build.version.sdk', '?')})",
                          runners=sorted(tools), runtimes={RUNNERS.get(r).runtime: p for r, p in tools.items()},
                          details=details)
        return _Phone(serial, info, tools, cores)

    def _phone(self, device: str) -> _Phone:
        if device not in self.phones:
            with contextlib.suppress(BackendUnavailable):  # then the message below says what there is
                self.devices()
        if device not in self.phones:
            raise PipelineError(f"no Android device '{device}' on the adb server at {self.address}: pick one of "
                                f"{sorted(self.phones) or 'the devices it lists (none now)'}")
        return self.phones[device]

    # ------------------------------------------------------------------ measure
    def measure(self, device: str, job: Job) -> MeasureResult:
        phone = self._phone(device)
        tool = TOOLS.get(job.runner)
        if tool is None:
            return _failed(f"runner '{job.runner}' has no timer on Android phones; the adb backend runs "
                           f"{', '.join(sorted(TOOLS))}")
        if job.runner not in phone.tools:
            path = self.tools[job.runner]
            return _failed(f"no executable {tool.name} at {path} on {device}: put it there (adb -s {phone.serial} "
                           f"push {tool.name} {path}; adb -s {phone.serial} shell chmod +x {path}; {tool.tool}) "
                           "or give the agent its path")
        down = self._server_down()
        if down:
            return _failed(down)
        try:
            return self._measure(phone, job, tool)
        except PipelineError as e:
            return _failed(str(e))
        except AdbError as e:
            return _failed(f"lost {device} over adb ({first_line(e)}): reconnect it and check 'adb devices'")

    def _measure(self, phone: _Phone, job: Job, tool: DeviceTool) -> MeasureResult:
        protocol: Protocol = job.protocol
        runner = RUNNERS.get(job.runner)(threads=protocol.threads, **job.runner_options)  # checks the options
        dev = self.client.device(phone.serial)
        model = self._push(dev, job.artifact, job.runner)
        reference = self._push(dev, job.reference, job.runner) if job.reference is not None else None
        cores = fastest_cores(phone.cores, protocol.threads) if protocol.pin and phone.cores else None
        mask = f"{sum(1 << c for c in cores):x}" if cores else None
        prefix = f"taskset {mask} " if mask else ""
        thermal_before, thermal_start, waited = self._cool_down(dev)
        governor = _sh(dev, GOVERNOR_CMD).strip() or "unknown"
        runs = [self._prepare(dev, prefix, job.runner, phone.tools[job.runner], m, protocol, runner.options)
                for m in ([model] if reference is None else [model, reference])]
        first_log, times = "", [[] for _ in runs]
        for _ in range(protocol.repeats):  # the reference's run right after each of the artifact's
            for run, ms in zip(runs, times):
                text = self._run(dev, run.command, protocol)
                first_log = first_log or text
                ms.append(_parse(run, text))
        load_ms, first_ms = load_and_first_ms(first_log)
        samples = Samples(tuple(times[0]), runs[0].number or timed_runs(first_log), load_ms, first_ms,
                          tuple(times[1]) if len(times) > 1 else ())
        return MeasureResult(status="ok", stats=samples.stats(), outputs=None, provenance={
            "device": phone.info.id, "backend": self.name, "serial": phone.serial, "model": phone.info.model,
            "soc": phone.info.details["soc"], "android": phone.info.os, "abi": phone.info.details["abi"],
            "governor": governor, "thermal_before": thermal_before, "thermal_at_start": thermal_start,
            "thermal_waited_s": round(waited, 3), "thermal_after": thermal_status(_sh(dev, THERMAL_CMD)),
            "runtime": runner.runtime, "runtime_version": phone.tools[job.runner], "tool": tool.name,
            "tool_path": phone.tools[job.runner], "command": runs[0].command,
            "reference_command": runs[1].command if len(runs) > 1 else None, "threads": protocol.threads,
            "cores": cores, "mask": mask, "inputs": "random, the tool's own", "protocol": asdict(protocol)})

    def _push(self, dev: AdbDevice, stored: Stored, runner: str) -> str:
        """`stored` on the phone as `<folder>/<sha256>.<format>`, pushed unless a file of that
        name and size is there already. The name comes from the hash alone, never a request."""
        assert HASH.fullmatch(stored.sha256), "the agent names stored artifacts by their SHA-256"
        formats = RUNNERS.get(runner).formats
        if stored.format not in formats:
            raise PipelineError(f"runner '{runner}' runs {', '.join(formats)} files, not '{stored.format}': "
                                "export for a target whose format it runs")
        if not stored.path.is_file():
            raise PipelineError(f"a '{stored.format}' artifact is a folder; the phone's tools read single files")
        remote = f"{self.folder}/{stored.sha256}.{stored.format}"
        size = stored.path.stat().st_size
        if dev.sync.stat(remote).size == size:
            return remote
        dev.shell2(f"mkdir -p {shlex.quote(self.folder)}", timeout=SOCKET_TIMEOUT_S)
        dev.sync.push(stored.path, remote, mode=0o644, check=True)
        return remote

    def _cool_down(self, dev: AdbDevice) -> tuple[int | None, int | None, float]:
        """(thermal status now, status when timing starts, seconds waited): a phone at
        `THERMAL_MODERATE` or above is throttling, so wait (at most `thermal_wait_s`) for it to cool."""
        before = status = thermal_status(_sh(dev, THERMAL_CMD))
        start = time.monotonic()
        while status is not None and status >= THERMAL_MODERATE and time.monotonic() - start < self.thermal_wait_s:
            time.sleep(self.thermal_poll_s)
            status = thermal_status(_sh(dev, THERMAL_CMD))
        return before, status, time.monotonic() - start

    def _prepare(self, dev: AdbDevice, prefix: str, runner: str, tool: str, model: str, protocol: Protocol,
                 options: Any) -> _Run:
        """The command that times `model` once per repeat (see the module's docstring)."""
        q = shlex.quote
        if runner == "litert":
            xnnpack = "true" if getattr(options, "xnnpack", True) else "false"
            return _Run(f"{prefix}{q(tool)} --graph={q(model)} --num_threads={protocol.threads} "
                        f"--use_xnnpack={xnnpack} --warmup_runs={protocol.warmup_runs} "
                        f"--warmup_min_secs={protocol.warmup_ms / 1e3:g} --num_runs=1 "
                        f"--min_secs={protocol.min_repeat_ms / 1e3:g}", BENCHMARK_MODEL.parse)
        command = f"{prefix}{q(tool)} --model_path={q(model)} --num_executions={{n}} --cpu_threads={protocol.threads}"
        warm = _Run(command.format(n=max(1, protocol.warmup_runs)), EXECUTOR_RUNNER.parse)
        ms = _parse(warm, self._run(dev, warm.command, protocol))
        n = min(MAX_EXECUTIONS, max(1, math.ceil(protocol.min_repeat_ms / max(ms, 1e-6))))
        return _Run(command.format(n=n), EXECUTOR_RUNNER.parse, n)

    def _run(self, dev: AdbDevice, command: str, protocol: Protocol) -> str:
        """One tool run's log; PipelineError (one line, with the fix) when it fails or prints no time."""
        timeout = protocol.row_timeout_s or 3600.0
        try:
            r = dev.shell2(command, timeout=timeout, rstrip=True)
        except AdbTimeout:
            raise PipelineError(f"no result within {timeout:g} s from '{command}': the runtime hung on this "
                                "model (--row-timeout)") from None
        if r.returncode != 0:
            last = next((line.strip() for line in reversed(r.output.splitlines()) if line.strip()), "no output")
            raise PipelineError(f"'{command}' failed on the phone (exit code {r.returncode}): {last}; run it by "
                                f"hand with 'adb -s {dev.serial} shell' to see its whole log")
        return r.output
