"""Core ML ML Programs (`.mlpackage`) through coremltools from `torch.export`, for `ios`.

Conversion works on Linux; running a model needs macOS (coremltools' `libcoremlpython`), so
here every artifact is at least reloaded and its interface checked against the module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters, quiet_import
from core.errors import PipelineError, first_line
from core.fileio import atomic_dir

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
PRECISIONS = ("fp16", "fp32")
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")  # ML Programs need iOS15 or later


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
        check_coreml_settings(self.options.minimum_deployment_target, self.options.precision, "ALL")

    @property
    def precision(self) -> str:
        return self.options.precision

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "coremltools": package_version("coremltools")}

    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Artifact:
        with atomic_dir(path) as tmp, quiet_converters():
            try:
                import coremltools as ct

                target, precision, _ = coreml_settings(
                    self.options.minimum_deployment_target, self.options.precision, "ALL")
                program = torch.export.export(module.eval(), example_inputs).run_decompositions({})
                inputs = [ct.TensorType(name=f"input_{i}" if i else "input", shape=tuple(x.shape))
                          for i, x in enumerate(example_inputs)]
                model = ct.convert(program, inputs=inputs, convert_to="mlprogram",
                                   minimum_deployment_target=target, compute_precision=precision)
                model.save(str(tmp))
            except Exception as e:
                raise conversion_error("Core ML conversion", e, path) from e
        artifact = self.artifact(path, example_inputs)
        self.inspect(artifact)
        return artifact

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
