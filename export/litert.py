"""LiteRT (TFLite) flatbuffers through litert-torch, for the `android` target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from export.base import EXPORTERS, Artifact, Exporter, conversion_error, package_version, quiet_converters
from core.fileio import atomic_path


@dataclass(frozen=True)
class LiteRTOptions:
    """No options: an fp32 flatbuffer; litert-torch keeps the NCHW interface and inserts the transposes."""


@EXPORTERS.register("litert")
class LiteRTExporter(Exporter):
    name = "litert"
    format = "tflite"
    suffix = ".tflite"
    Options = LiteRTOptions
    modules = ("litert_torch",)
    extra = "android"

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "litert-torch": package_version("litert-torch")}

    def has_layout_edges(self) -> bool:
        return True  # a TRANSPOSE to NHWC at the input and back at the output (tests/test_boundary.py)

    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Artifact:
        with atomic_path(path) as tmp, quiet_converters():
            try:
                import litert_torch  # heavy (pulls in JAX and TensorFlow's converter): import on use

                litert_torch.convert(module.eval(), example_inputs).export(str(tmp))
            except Exception as e:
                raise conversion_error("LiteRT conversion", e, path) from e
        return self.artifact(path, example_inputs)
