"""Core ML ML Programs (`.mlpackage`) through coremltools from `torch.export`, for `ios`.

Conversion works on Linux; running a model needs macOS (coremltools' `libcoremlpython`), so
here every artifact is at least reloaded and its interface checked against the module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters, quiet_import
from export.quantize import (Inputs, Quantization, activation_quantization_here, calibration_inputs,
                             describe_calibration, require_int8_tensors)
from core.errors import PipelineError, first_line
from core.fileio import atomic_dir

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
PRECISIONS = ("fp16", "fp32")  # compute precisions (both the converter's and the ExecuTorch delegate's)
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")  # ML Programs need iOS15 or later
# 8-bit weights are `constexpr` ops from iOS16; 8-bit activations (quantize/dequantize on
# activations) from iOS17. Compute stays fp16 in both.
QUANTIZED_SINCE = {"w8": "iOS16", "int8": "iOS17"}
COREML_SCHEME = {"w8": "int8 linear symmetric weights per output channel; fp16 activations",
                 "int8": "int8 linear symmetric weights per output channel; int8 linear symmetric activations"}


def check_coreml_settings(deployment_target: str, precision: str, compute_units: str) -> None:
    """Validate the user's strings without importing coremltools (it may not be installed)."""
    for what, value, valid in (("precision", precision, PRECISIONS), ("compute_units", compute_units, COMPUTE_UNITS),
                               ("minimum_deployment_target", deployment_target, DEPLOYMENT_TARGETS)):
        if value not in valid:
            raise PipelineError(f"Core ML option {what}='{value}' is not one of {', '.join(valid)}")


def coreml_settings(deployment_target: str, precision: str, compute_units: str) -> tuple[Any, Any, Any]:
    """The user's strings as coremltools enums."""
    check_coreml_settings(deployment_target, precision, compute_units)
    ct = quiet_import("coremltools")

    prec = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    return getattr(ct.target, deployment_target), prec, ct.ComputeUnit[compute_units]


@dataclass(frozen=True)
class CoreMLOptions:
    minimum_deployment_target: str = "iOS16"
    precision: str = "fp16"


@EXPORTERS.register("coreml")
class CoreMLExporter(Exporter):
    name = "coreml"
    format = "mlpackage"
    suffix = ".mlpackage"
    Options = CoreMLOptions
    modules = ("coremltools",)
    extra = "ios"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        check_coreml_settings(self.options.minimum_deployment_target, self._compute_precision(), "ALL")

    def precisions(self) -> tuple[str, ...]:
        since = DEPLOYMENT_TARGETS.index
        target = since(self.options.minimum_deployment_target) if self.options.minimum_deployment_target in \
            DEPLOYMENT_TARGETS else 0
        return PRECISIONS + tuple(p for p, v in QUANTIZED_SINCE.items() if target >= since(v))

    def _for(self) -> str:
        return f" for {self.options.minimum_deployment_target}"

    def _compute_precision(self) -> str:
        return "fp16" if self.precision in QUANTIZED_SINCE else self.precision

    def unavailable_reason(self) -> str | None:
        return activation_quantization_here() if self.precision == "int8" else None

    def quantization(self, calibration: Sequence[Inputs] | None = None) -> Quantization | None:
        if self.precision not in QUANTIZED_SINCE:
            return None
        if self.precision == "w8":
            return Quantization("w8", "coremltools.optimize.coreml.linear_quantize_weights", COREML_SCHEME["w8"], "")
        return Quantization("int8", "coremltools.optimize.coreml.linear_quantize_activations + "
                            "linear_quantize_weights", COREML_SCHEME["int8"], describe_calibration(calibration))

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "coremltools": package_version("coremltools")}

    def export(self, module: torch.nn.Module, example_inputs: Inputs, path: Path,
               calibration: Sequence[Inputs] | None = None) -> Artifact:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PipelineError(reason)
        with atomic_dir(path) as tmp, quiet_converters():
            try:
                import coremltools as ct

                target, precision, _ = coreml_settings(
                    self.options.minimum_deployment_target, self._compute_precision(), "ALL")
                program = torch.export.export(module.eval(), example_inputs).run_decompositions({})
                inputs = [ct.TensorType(name=f"input_{i}" if i else "input", shape=tuple(x.shape))
                          for i, x in enumerate(example_inputs)]
                model = ct.convert(program, inputs=inputs, convert_to="mlprogram",
                                   minimum_deployment_target=target, compute_precision=precision)
                if self.precision in QUANTIZED_SINCE:
                    model = self._quantized(model, example_inputs, calibration)
                    require_int8_tensors(int8_weights(model.get_spec()), "the 8-bit Core ML model", module)
                model.save(str(tmp))
            except Exception as e:
                raise conversion_error("Core ML conversion", e, path) from e
        artifact = self.artifact(path, example_inputs)
        self.inspect(artifact)
        return artifact

    def _quantized(self, model: Any, example_inputs: Inputs, calibration: Sequence[Inputs] | None) -> Any:
        from coremltools.optimize import coreml as cto

        if self.precision == "int8":  # activations first: their calibration runs the float model
            batches = calibration if calibration is not None else calibration_inputs(example_inputs)
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
            samples = [{"input": b[0].numpy()} for b in batches]
            model = cto.linear_quantize_activations(model, config, samples)
        weights = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
        return cto.linear_quantize_weights(model, weights)

    def inspect(self, artifact: Artifact) -> None:
        """Reload the package with coremltools (no prediction: that needs macOS) and check
        that its declared input shapes are the module's and it has an output."""
        ct = quiet_import("coremltools")
        try:
            with quiet_converters(fds=False):
                spec = ct.models.MLModel(str(artifact.path), skip_model_load=True).get_spec()
        except Exception as e:
            raise PipelineError(
                f"Core ML package '{artifact.path}' cannot be read ({first_line(e)}); it is corrupt: export it again"
            ) from None
        declared = [tuple(int(d) for d in i.type.multiArrayType.shape) for i in spec.description.input]
        if declared != list(artifact.input_shapes) or not spec.description.output:
            raise PipelineError(
                f"Core ML package '{artifact.path}' declares inputs {declared}, expected "
                f"{list(artifact.input_shapes)}; export it again"
            )


def int8_weights(spec: Any) -> int:
    """How many weights of an ML Program are stored as 8-bit integers (constexpr dequantize ops)."""
    ops = [op for f in spec.mlProgram.functions.values() for b in f.block_specializations.values()
           for op in b.operations]
    return sum(1 for op in ops if op.type.startswith("constexpr_") and "dequantize" in op.type
               or op.type == "constexpr_blockwise_shift_scale")
