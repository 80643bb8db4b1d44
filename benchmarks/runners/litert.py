"""ai-edge-litert's interpreter (the maintained successor of tflite-runtime) for `.tflite`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.runners.base import RUNNERS, Run, Runner
from export.base import Artifact, package_version, quiet_converters
from core.errors import PipelineError, first_line


@dataclass(frozen=True)
class LiteRTRunnerOptions:
    xnnpack: bool = True  # the CPU delegate LiteRT applies by default on Android


@RUNNERS.register("litert")
class LiteRTRunner(Runner):
    name = "litert"
    formats = ("tflite",)
    runtime = "ai-edge-litert"
    Options = LiteRTRunnerOptions
    modules = ("ai_edge_litert",)

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
        ins = [d["index"] for d in it.get_input_details()]
        outs = [d["index"] for d in it.get_output_details()]

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            for i, x in zip(ins, inputs):
                it.set_tensor(i, x)
            it.invoke()
            return [it.get_tensor(o) for o in outs]

        return run
