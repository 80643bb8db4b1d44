"""Precisions, and the ecosystems' own quantizers that make them: one place for both.

Every exporter has a `precision` option. A float precision is the converter's own business
(`fp16` in Core ML's compute precision); the 8-bit ones are made here, each by its format's
own quantizer, never by hand:

- ONNX: `onnxruntime.quantization.quantize_static`, QDQ format;
- LiteRT: litert-torch's `PT2EQuantizer` through torchao's `prepare_pt2e` / `convert_pt2e`;
- ExecuTorch (XNNPACK): the `XNNPACKQuantizer`, through the same torchao functions;
- Core ML: `coremltools.optimize.coreml` (`linear_quantize_weights`; activations need
  `linear_quantize_activations`, which runs the model, so macOS).

A static int8 quantizer needs calibration inputs. Where the caller gives none (a table's
block, a validation network), the module is calibrated on `CALIBRATION_SAMPLES` seeded
random-normal inputs of its own input shape (`calibration_inputs`); the derived network is
calibrated on samples of the user's training data instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from core.errors import PipelineError

Inputs = tuple[torch.Tensor, ...]

PRECISIONS: dict[str, str] = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights and activations",
    "int8": "int8 weights (symmetric, per output channel) and int8 activations (per tensor), calibrated statically",
    "w8": "int8 weights (symmetric, per output channel), float activations",
}
QUANTIZED = ("int8", "w8")
CALIBRATION_SAMPLES = 8
CALIBRATION_SEED = 1234


@dataclass(frozen=True)
class Quantization:
    """How an artifact was quantized: recorded in a table's provenance and beside an export."""

    precision: str
    quantizer: str  # the ecosystem's function or class that did it
    scheme: str  # weights and activations, their granularity and symmetry
    calibration: str  # what the activations' ranges were measured on ("" for weights only)

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.precision, "quantizer": self.quantizer, "scheme": self.scheme,
                "calibration": self.calibration}


def check_precision(precision: str, available: Sequence[str], what: str) -> None:
    """A precision the format (or its deployment target) lacks: one line listing those it has."""
    if precision not in available:
        known = "" if precision in PRECISIONS else f" (precisions: {', '.join(PRECISIONS)})"
        raise PipelineError(f"{what} has no precision '{precision}'{known}; it has {', '.join(available)}: "
                            f"pass -o precision={available[0]}")


def calibration_inputs(example_inputs: Inputs, samples: int = CALIBRATION_SAMPLES) -> list[Inputs]:
    """`samples` random-normal inputs of the example inputs' own shapes, the same in every
    process (a block's int8 artifact must not depend on which worker exported it)."""
    g = torch.Generator().manual_seed(CALIBRATION_SEED)
    return [tuple(torch.randn(x.shape, generator=g, dtype=x.dtype) for x in example_inputs) for _ in range(samples)]


def describe_calibration(calibration: Sequence[Inputs] | None) -> str:
    if calibration is None:
        return f"{CALIBRATION_SAMPLES} seeded random-normal inputs of the module's own input shape"
    return f"{len(calibration)} given inputs"


def pt2e_quantize(module: torch.nn.Module, example_inputs: Inputs, quantizer: Any,
                  calibration: Sequence[Inputs], fold_quantize: bool = True) -> torch.fx.GraphModule:
    """A PT2E-quantized graph: exported, observed on `calibration`, converted to Q/DQ pairs.
    torchao's functions: `torch.ao.quantization.quantize_pt2e` is gone in this torch. With
    `fold_quantize=False` the weights stay float behind their quantize op (litert-torch's
    lowering reads the pair; folded int8 constants fail its `uniform_dequantize`)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(module.eval(), example_inputs).module()
    prepared = prepare_pt2e(graph, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    require_quantized_ops(converted, "the PT2E quantizer", module)
    return converted


def require_quantized_ops(graph: torch.fx.GraphModule, what: str, module: torch.nn.Module) -> int:
    """How many quantize ops `graph` has; none (where `module` has weights) means the quantizer
    silently left it float."""
    count = sum(1 for n in graph.graph.nodes if n.op == "call_function" and "quantize_per" in str(n.target)
                and "dequantize" not in str(n.target))
    if count == 0 and has_weights(module):
        raise PipelineError(f"{what} left the model float (no quantize op in its graph)")
    return count


def has_weights(module: torch.nn.Module) -> bool:
    """An identity (`skip`) has nothing to quantize: its 8-bit artifact has no 8-bit tensor."""
    return any(p.numel() for p in module.parameters())


def require_int8_tensors(count: int, what: str, module: torch.nn.Module) -> None:
    """Converters have returned float models for an int8 request (open litert-torch issues):
    an artifact of a module with weights but without 8-bit tensors is refused, not stored as int8."""
    if count == 0 and has_weights(module):
        raise PipelineError(f"{what} has no 8-bit tensor: the converter ignored the quantization")


def activation_quantization_here() -> str | None:
    """None where Core ML can quantize activations (it runs the model to calibrate), else why not."""
    if sys.platform != "darwin":
        return ("Core ML quantizes activations by running the model, which needs macOS; on this machine use "
                "-o precision=w8 (8-bit weights, float activations)")
    return None
