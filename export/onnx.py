"""ONNX export for the `desktop` targets: float, or int8 by ONNX Runtime's static quantizer."""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from export.app import METADATA_KEY, AppInterface
from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from export.quantize import Inputs, Quantization, calibration_inputs, describe_calibration, require_int8_tensors
from core.errors import PipelineError
from core.fileio import atomic_path

# Weights int8 symmetric per output channel, activations uint8 per tensor: ONNX Runtime's advice
# for x86 CPUs (quantize_static's docstring).
ONNX_INT8_SCHEME = "QDQ; int8 symmetric weights per output channel; uint8 asymmetric activations per tensor; MinMax"
SEVEN_BIT = "; 7-bit weights (reduce_range)"


def saturates_8bit_weights(arch: str, flags: Iterable[str]) -> bool:
    """Whether ONNX Runtime's uint8 x int8 kernels on this CPU overflow with 8-bit weights: on x86
    without VNNI they multiply and add pairs into int16 (vpmaddubsw), which saturates where two
    products of up to 255 x 127 meet; 7-bit weights keep every pair inside int16. VNNI (AVX-512 or
    AVX) accumulates in int32, and ARM's kernels widen before they add. `arch` and `flags` as
    py-cpuinfo names them (`X86_64`, `avx512_vnni` or `avx512vnni`, `avx_vnni` or `avxvnni`)."""
    return arch.upper().startswith("X86") and not any("vnni" in f.lower() for f in flags)


@functools.cache
def this_cpu_saturates() -> bool:
    import cpuinfo  # py-cpuinfo: reads CPUID on every OS; about a second, so once a process

    info = cpuinfo.get_cpu_info()
    return saturates_8bit_weights(str(info.get("arch", "")), info.get("flags", []))


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 18
    # The TorchScript exporter is ~20x faster per block than torch.export's (docs/reference.md:
    # ~0.1 s against ~2 s), which decides whether a full table takes one minute or five.
    # Both fold BatchNorm and give the same graph for these convolutional blocks.
    dynamo: bool = False
    precision: str = "fp32"
    # int8 only: 7-bit weights. None: where this CPU needs them (`saturates_8bit_weights`); on one that
    # does, 8-bit weights put a 1x1 conv's output 16 dB from the float one, against 38 with 7 bits.
    reduce_range: bool | None = None


@EXPORTERS.register("onnx")
class OnnxExporter(Exporter):
    name = "onnx"
    format = "onnx"
    suffix = ".onnx"
    Options = OnnxOptions

    def precisions(self) -> tuple[str, ...]:
        return ("fp32", "int8")

    def versions(self) -> dict[str, str]:
        # the installed version, not `import onnx` (a second to import) for a string
        v = {"torch": torch.__version__, "onnx": package_version("onnx")}
        if self.precision == "int8":
            v["onnxruntime"] = package_version("onnxruntime")
        return v

    @property
    def reduce_range(self) -> bool:
        """Whether int8 weights are 7-bit: as the option says, or where this CPU needs them."""
        chosen = self.options.reduce_range
        return this_cpu_saturates() if chosen is None else chosen

    def fingerprint(self) -> dict[str, Any]:
        # the weights' bits as exported, not the option (None): an artifact cached on a CPU that
        # needs 7 bits is no int8 artifact of one that does not
        return {**super().fingerprint(), "reduce_range": self.precision == "int8" and self.reduce_range}

    def mismatch_cause(self) -> str:
        if self.precision == "int8" and not self.reduce_range and this_cpu_saturates():
            return ("8-bit weights overflow ONNX Runtime's int8 kernels on this CPU (x86 without VNNI; "
                    "docs/precision.md); leave -o reduce_range out or pass -o reduce_range=true")
        return super().mismatch_cause()

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision != "int8":
            return None
        scheme = ONNX_INT8_SCHEME + (SEVEN_BIT if self.reduce_range else "")
        return Quantization("int8", "onnxruntime.quantization.quantize_static", scheme,
                            describe_calibration(calibration))

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None, app: AppInterface | None = None) -> Artifact:
        module = module.eval()
        with atomic_path(path) as tmp, quiet_converters(fds=False):
            try:
                if self.precision == "int8":
                    with tempfile.TemporaryDirectory() as work:
                        self._float(module, example_inputs, Path(work) / "float.onnx")
                        self._quantize(Path(work) / "float.onnx", tmp,
                                       calibration if calibration is not None else calibration_inputs(example_inputs))
                        require_int8_tensors(int8_initializers(tmp), "the int8 ONNX model", module)
                else:
                    self._float(module, example_inputs, tmp)
                import onnx  # only where an export is made: a second to import

                if app is not None:  # ONNX Runtime hands it to apps as get_modelmeta().custom_metadata_map
                    model = onnx.load(str(tmp))
                    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(app.facts())})
                    onnx.save(model, str(tmp))
                onnx.checker.check_model(str(tmp))
            except PipelineError:
                raise
            except Exception as e:  # a converter error becomes a reason, not a traceback
                raise conversion_error("ONNX export", e, path) from e
        return self.artifact(path, example_inputs)

    def _float(self, module: torch.nn.Module, example_inputs: Inputs, out: Path) -> None:
        kwargs = {"external_data": False} if self.options.dynamo else {}
        torch.onnx.export(module, example_inputs, str(out), dynamo=self.options.dynamo,
                          opset_version=self.options.opset, input_names=["input"], output_names=["output"], **kwargs)

    def _quantize(self, model: Path, out: Path, calibration: Sequence[Inputs]) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration)

            def get_next(self) -> dict[str, Any] | None:
                batch = next(self.batches, None)
                return None if batch is None else {"input": batch[0].numpy()}

        quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=self.reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)


def int8_initializers(path: Path) -> int:
    """How many of the model's constant tensors are 8-bit integers."""
    import onnx

    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return sum(1 for t in onnx.load(str(path)).graph.initializer if t.data_type in eight_bit)
