"""LiteRT (TFLite) flatbuffers through litert-torch, for the `android` targets: float, or int8 by
litert-torch's PT2E quantizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from export.quantize import (Inputs, Quantization, calibration_inputs, describe_calibration, pt2e_quantize,
                             require_int8_tensors)
from core.errors import PipelineError
from core.fileio import atomic_path

LITERT_INT8_SCHEME = "int8 symmetric weights per output channel; int8 activations per tensor (histogram observer)"


@dataclass(frozen=True)
class LiteRTOptions:
    """litert-torch keeps the NCHW interface and inserts the transposes; int8 keeps float input
    and output (quantize and dequantize at the edges)."""

    precision: str = "fp32"


@EXPORTERS.register("litert")
class LiteRTExporter(Exporter):
    name = "litert"
    format = "tflite"
    suffix = ".tflite"
    Options = LiteRTOptions
    modules = ("litert_torch",)
    extra = "android"

    def precisions(self) -> tuple[str, ...]:
        return ("fp32", "int8")

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__, "litert-torch": package_version("litert-torch")}
        if self.precision == "int8":
            v["torchao"] = package_version("torchao")
        return v

    def has_layout_edges(self) -> bool:
        return True  # a TRANSPOSE to NHWC at the input and back at the output (tests/test_boundary.py)

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision != "int8":
            return None
        return Quantization("int8", "litert_torch PT2EQuantizer (torchao prepare_pt2e/convert_pt2e)",
                            LITERT_INT8_SCHEME, describe_calibration(calibration))

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None) -> Artifact:
        with atomic_path(path) as tmp, quiet_converters():
            try:
                import litert_torch  # heavy (pulls in JAX and TensorFlow's converter): import on use

                if self.precision == "int8":
                    model, kwargs = self._quantized(module, example_inputs, calibration)
                else:
                    model, kwargs = module.eval(), {}
                litert_torch.convert(model, example_inputs, **kwargs).export(str(tmp))
                if self.precision == "int8":
                    require_int8_tensors(int8_tensors(tmp), "the int8 LiteRT model", module)
            except PipelineError:
                raise
            except Exception as e:
                raise conversion_error("LiteRT conversion", e, path) from e
        return self.artifact(path, example_inputs)

    def _quantized(self, module: torch.nn.Module, example_inputs: Inputs,
                   calibration: Sequence[Inputs] | None) -> tuple[torch.nn.Module, dict[str, Any]]:
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        batches = calibration if calibration is not None else calibration_inputs(example_inputs)
        graph = pt2e_quantize(module, example_inputs, quantizer, batches, fold_quantize=False)
        return graph, {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}


def int8_tensors(path: Path) -> int:
    """How many tensors of the flatbuffer are 8-bit integers (read by LiteRT's own interpreter)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return sum(1 for t in details if t["dtype"] in (np.int8, np.uint8))
