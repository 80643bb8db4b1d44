"""ONNX export for the `desktop` target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from core.fileio import atomic_path


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 18
    # The TorchScript exporter is ~20x faster per block than torch.export's (docs/reference.md:
    # ~0.1 s against ~2 s), which decides whether a full table takes one minute or five.
    # Both fold BatchNorm and give the same graph for these convolutional blocks.
    dynamo: bool = False


@EXPORTERS.register("onnx")
class OnnxExporter(Exporter):
    name = "onnx"
    format = "onnx"
    suffix = ".onnx"
    Options = OnnxOptions

    def versions(self) -> dict[str, str]:
        # the installed version, not `import onnx` (a second to import) for a string
        return {"torch": torch.__version__, "onnx": package_version("onnx")}

    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Artifact:
        module = module.eval()
        with atomic_path(path) as tmp, quiet_converters(fds=False):
            try:
                kwargs = {"external_data": False} if self.options.dynamo else {}
                torch.onnx.export(
                    module, example_inputs, str(tmp), dynamo=self.options.dynamo,
                    opset_version=self.options.opset, input_names=["input"],
                    output_names=["output"], **kwargs,
                )
                import onnx  # only where an export is made: a second to import

                onnx.checker.check_model(str(tmp))
            except Exception as e:  # a converter error becomes a reason, not a traceback
                raise conversion_error("ONNX export", e, path) from e
        return self.artifact(path, example_inputs)
