"""ExecuTorch programs (`.pte`) lowered with `to_edge_transform_and_lower`: delegated to
XNNPACK for `android-executorch` (float, or int8 by the XNNPACK quantizer), to Core ML for
`ios-executorch`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from export.app import AppInterface
from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from export.coreml import check_coreml_settings, coreml_settings
from export.quantize import Inputs, Quantization, calibration_inputs, describe_calibration, pt2e_quantize
from core.errors import PipelineError
from core.fileio import atomic_path

DELEGATES = ("xnnpack", "coreml")
PRECISIONS = {"xnnpack": ("fp32", "int8"), "coreml": ("fp16", "fp32")}
XNNPACK_INT8_SCHEME = "int8 symmetric weights per output channel; int8 activations per tensor"


@dataclass(frozen=True)
class ExecuTorchOptions:
    delegate: str = "xnnpack"
    # Core ML delegate only (its compile specs):
    minimum_deployment_target: str = "iOS17"
    compute_units: str = "ALL"
    # None: the delegate's own default, fp32 on XNNPACK and fp16 on Core ML
    precision: str | None = None


_COREML_ONLY = ("minimum_deployment_target", "compute_units")


@EXPORTERS.register("executorch")
class ExecuTorchExporter(Exporter):
    name = "executorch"
    format = "pte"
    suffix = ".pte"
    Options = ExecuTorchOptions
    modules = ("executorch",)
    extra = "android"

    def __init__(self, **options: Any) -> None:
        delegate = options.get("delegate", "xnnpack")
        if delegate not in DELEGATES:
            raise PipelineError(f"executorch option delegate='{delegate}' is not one of {', '.join(DELEGATES)}")
        super().__init__(**options)
        given = [k for k in _COREML_ONLY if k in options]
        if self.options.delegate != "coreml" and given:
            raise PipelineError(
                f"executorch option {given[0]} applies to the Core ML delegate only; drop it or use target ios-executorch"
            )
        if self.options.delegate == "coreml":
            check_coreml_settings(self.options.minimum_deployment_target, self.precision, self.options.compute_units)

    def _for(self) -> str:
        return f" delegating to {self.options.delegate}"

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        fp["precision"] = self.precision
        if self.options.delegate != "coreml":  # unused options must not split the cache
            for k in _COREML_ONLY:
                fp.pop(k)
            if self.precision == "fp32":
                fp.pop("precision")
        return fp

    @property
    def precision(self) -> str:
        return self.options.precision or PRECISIONS[self.options.delegate][0]

    def precisions(self) -> tuple[str, ...]:
        return PRECISIONS[self.options.delegate]

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision != "int8":
            return None
        return Quantization("int8", "XNNPACKQuantizer (torchao prepare_pt2e/convert_pt2e)", XNNPACK_INT8_SCHEME,
                            describe_calibration(calibration))

    def has_layout_edges(self) -> bool:
        # XNNPACK runs NHWC: the delegate converts the NCHW input and output where it starts and ends.
        return self.options.delegate == "xnnpack"

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__, "executorch": package_version("executorch")}
        if self.precision == "int8":
            v["torchao"] = package_version("torchao")
        if self.options.delegate == "coreml":
            v["coremltools"] = package_version("coremltools")
        return v

    def _partitioner(self) -> Any:
        if self.options.delegate == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            return XnnpackPartitioner()
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        target, precision, units = coreml_settings(
            self.options.minimum_deployment_target, self.precision, self.options.compute_units
        )
        specs = CoreMLBackend.generate_compile_specs(
            compute_precision=precision, minimum_deployment_target=target, compute_unit=units
        )
        return CoreMLPartitioner(compile_specs=specs)

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None, app: AppInterface | None = None) -> Artifact:
        """A program has no place for an app's facts: the export stage's sidecar holds them."""
        with atomic_path(path) as tmp, quiet_converters():
            try:
                from executorch.exir import to_edge_transform_and_lower  # heavy: import on use, quietly

                # a quantized graph is already in eval form: exported graphs refuse .eval()
                graph = self._quantized(module, example_inputs, calibration) if self.precision == "int8" else module.eval()
                program = torch.export.export(graph, example_inputs)
                lowered = to_edge_transform_and_lower(program, partitioner=[self._partitioner()])
                tmp.write_bytes(lowered.to_executorch().buffer)
            except PipelineError:
                raise
            except Exception as e:
                raise conversion_error(f"ExecuTorch ({self.options.delegate}) lowering", e, path) from e
        return self.artifact(path, example_inputs)


    def _quantized(self, module: torch.nn.Module, example_inputs: Inputs,
                   calibration: Sequence[Inputs] | None) -> torch.nn.Module:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        batches = calibration if calibration is not None else calibration_inputs(example_inputs)
        return pt2e_quantize(module, example_inputs, quantizer, batches)
