"""ExecuTorch programs (`.pte`) lowered with `to_edge_transform_and_lower`: delegated to
XNNPACK for `android-executorch`, to Core ML for `ios-executorch`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from export.coreml import check_coreml_settings, coreml_settings
from core.errors import PipelineError
from core.fileio import atomic_path

DELEGATES = ("xnnpack", "coreml")


@dataclass(frozen=True)
class ExecuTorchOptions:
    delegate: str = "xnnpack"
    # Core ML delegate only (its compile specs):
    minimum_deployment_target: str = "iOS17"
    precision: str = "fp16"
    compute_units: str = "ALL"


_COREML_ONLY = ("minimum_deployment_target", "precision", "compute_units")


@EXPORTERS.register("executorch")
class ExecuTorchExporter(Exporter):
    name = "executorch"
    format = "pte"
    suffix = ".pte"
    Options = ExecuTorchOptions
    modules = ("executorch",)
    extra = "android"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options.delegate not in DELEGATES:
            raise PipelineError(
                f"executorch option delegate='{self.options.delegate}' is not one of {', '.join(DELEGATES)}"
            )
        given = [k for k in _COREML_ONLY if k in options]
        if self.options.delegate != "coreml" and given:
            raise PipelineError(
                f"executorch option {given[0]} applies to the Core ML delegate only; drop it or use target ios-executorch"
            )
        if self.options.delegate == "coreml":
            check_coreml_settings(self.options.minimum_deployment_target, self.options.precision, self.options.compute_units)

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        if self.options.delegate != "coreml":  # unused options must not split the cache
            for k in _COREML_ONLY:
                fp.pop(k)
        return fp

    @property
    def precision(self) -> str:
        return self.options.precision if self.options.delegate == "coreml" else "fp32"

    def has_layout_edges(self) -> bool:
        # XNNPACK runs NHWC: the delegate converts the NCHW input and output where it starts and ends.
        return self.options.delegate == "xnnpack"

    def versions(self) -> dict[str, str]:
        v = {"torch": torch.__version__, "executorch": package_version("executorch")}
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
            self.options.minimum_deployment_target, self.options.precision, self.options.compute_units
        )
        specs = CoreMLBackend.generate_compile_specs(
            compute_precision=precision, minimum_deployment_target=target, compute_unit=units
        )
        return CoreMLPartitioner(compile_specs=specs)

    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Artifact:
        with atomic_path(path) as tmp, quiet_converters():
            try:
                from executorch.exir import to_edge_transform_and_lower  # heavy: import on use, quietly

                program = torch.export.export(module.eval(), example_inputs)
                lowered = to_edge_transform_and_lower(program, partitioner=[self._partitioner()])
                tmp.write_bytes(lowered.to_executorch().buffer)
            except PipelineError:
                raise
            except Exception as e:
                raise conversion_error(f"ExecuTorch ({self.options.delegate}) lowering", e, path) from e
        return self.artifact(path, example_inputs)

