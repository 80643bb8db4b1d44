"""ai-edge-litert's interpreter (the maintained successor of tflite-runtime) for `.tflite`."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from benchmarks.runners.base import RUNNERS, Call, DeviceTool, Run, Runner
from export.base import Artifact, package_version, quiet_converters
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class LiteRTRunnerOptions:
    xnnpack: bool = True  # the CPU delegate LiteRT applies by default on Android


_LITERT_AVG_MS = re.compile(r"Inference \(avg\):\s+([0-9.eE+-]+) ms")


def parse_benchmark_model(text: str) -> float:
    """LiteRT `benchmark_model`'s log -> ms per run. The median of the timed runs where the
    tool prints one (recent versions add `median=` to the last `count=` line, the timed runs; the
    one before it is the warm-up; it is in µs), else their average (`Inference (avg)`).

    Two summaries exist. TFLite's tool (TensorFlow 2.x, LiteRT 1.x) ends with `Inference timings
    in us: ..., Inference (avg): N` in µs; LiteRT 2.x's (`litert/tools`) prints a `BENCHMARK
    RESULTS` block instead, with `Inference (avg): N ms (K runs)` in ms."""
    tflite = "Inference timings in us" in text
    litert = "BENCHMARK RESULTS" in text and _LITERT_AVG_MS.search(text) is not None
    if not tflite and not litert:
        raise ValueError("it has no 'Inference timings in us' line nor 'BENCHMARK RESULTS' block, so "
                         "benchmark_model did not finish")
    medians = re.findall(r"^.*\bcount=\d+\b.*\bmedian=([0-9.eE+-]+)", text, re.MULTILINE)
    if medians:
        return float(medians[-1]) / 1000.0
    if not tflite:
        return float(_LITERT_AVG_MS.findall(text)[-1])
    avg = re.search(r"Inference \(avg\): ([0-9.eE+-]+)", text)
    if avg is None:
        raise ValueError("its 'Inference timings in us' line has no 'Inference (avg)'")
    return float(avg.group(1)) / 1000.0


BENCHMARK_MODEL = DeviceTool(
    "LiteRT's benchmark_model for the device's CPU (android_aarch64_benchmark_model from LiteRT's releases)",
    "BENCHMARK_MODEL", "/data/local/tmp/benchmark_model",
    "'$TOOL' --graph='$MODEL' --num_threads=$THREADS --use_xnnpack=true --warmup_runs=1 --num_runs=50 --min_secs=1",
    parse_benchmark_model,
    "each run: warm-up runs (at least one, and 0.5 s), then at least 50 timed runs and 1 s (benchmark_model's "
    "defaults), with XNNPACK as the table was timed")


def to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float input as the model's input tensor takes it: quantized with the tensor's own scale
    and zero point where the converter made the input 8-bit (litert-torch does for some int8
    graphs), as an app feeding that model would."""
    dtype = detail["dtype"]
    if dtype not in (np.int8, np.uint8) or x.dtype == dtype:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def from_tensor(y: np.ndarray, detail: dict) -> np.ndarray:
    """An 8-bit output dequantized to float with its tensor's scale and zero point."""
    if detail["dtype"] not in (np.int8, np.uint8):
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


@RUNNERS.register("litert")
class LiteRTRunner(Runner):
    name = "litert"
    formats = ("tflite",)
    runtime = "ai-edge-litert"
    Options = LiteRTRunnerOptions
    modules = ("ai_edge_litert",)
    device_tool = BENCHMARK_MODEL

    def version(self) -> str:
        return package_version("ai-edge-litert")

    def load(self, artifact: Artifact) -> Run:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.options.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with quiet_converters():  # the native side announces its XNNPACK delegate on stderr
                it = Interpreter(model_path=str(artifact.path), num_threads=self.threads,
                                 experimental_op_resolver_type=resolver)
                it.allocate_tensors()
        except Exception as e:
            raise PipelineError(
                f"LiteRT cannot open '{artifact.path}' ({first_line(e)}); the file is corrupt or truncated: "
                "export it again"
            ) from None
        ins, outs = it.get_input_details(), it.get_output_details()

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            for d, x in zip(ins, inputs):
                it.set_tensor(d["index"], to_tensor(x, d))
            it.invoke()
            return [from_tensor(it.get_tensor(d["index"]), d) for d in outs]

        return run

    @classmethod
    def open_plain(cls, path: str, threads: int) -> Call:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=path, num_threads=threads)  # XNNPACK applied by default, as on Android
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], to_tensor(np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32), d))
        return it.invoke
