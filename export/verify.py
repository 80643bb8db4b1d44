"""Numerical check of an exported artifact against eager PyTorch on the same input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.errors import PipelineError


@dataclass(frozen=True)
class Tolerance:
    """An output passes when max |actual - reference| <= atol + rtol * max |reference|, or,
    where `min_sqnr_db` is set (8-bit), when its signal-to-quantization-noise ratio is at least
    that.

    Relative to the output's magnitude rather than element by element: fp16 formats round
    near-zero elements to relative errors that say nothing about whether the graph is right.
    An 8-bit output's largest error is one element's rounding, which wanders with the input
    (0.8-6.7% of the output's magnitude over fbnet's blocks on ONNX Runtime), while its SQNR
    holds steady (35-37 dB there).
    """

    atol: float
    rtol: float
    min_sqnr_db: float | None = None

    def bound(self, max_ref: float) -> float:
        return self.atol + self.rtol * max_ref


FP32 = Tolerance(atol=1e-4, rtol=1e-4)
FP16 = Tolerance(atol=1e-2, rtol=1e-2)
# 8-bit, by SQNR: fbnet's blocks come out at 35-37 dB on ONNX Runtime (docs/precision.md); a
# graph that computes something else is near 0 dB.
INT8 = Tolerance(atol=0.0, rtol=0.0, min_sqnr_db=20.0)
W8 = Tolerance(atol=0.0, rtol=0.0, min_sqnr_db=25.0)
TOLERANCES = {"fp32": FP32, "fp16": FP16, "int8": INT8, "w8": W8}


@dataclass(frozen=True)
class CheckResult:
    max_abs_err: float
    max_ref: float
    ok: bool
    sqnr_db: float | None = None  # where the tolerance judges by it


def compare_outputs(reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> CheckResult:
    if reference.shape != actual.shape:
        return CheckResult(float("inf"), float(np.abs(reference).max()), False)
    err = float(np.abs(reference - actual.astype(reference.dtype)).max()) if reference.size else 0.0
    max_ref = float(np.abs(reference).max()) if reference.size else 0.0
    if tol.min_sqnr_db is not None:
        ratio = sqnr_db(reference, actual)
        return CheckResult(err, max_ref, bool(np.isfinite(err) and ratio >= tol.min_sqnr_db), ratio)
    return CheckResult(err, max_ref, bool(np.isfinite(err) and err <= tol.bound(max_ref)))


MISTRANSLATED = "the converter mistranslated it"


def check_against_torch(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    run: Callable[[list[np.ndarray]], list[np.ndarray]],
    tol: Tolerance,
    what: str,
    cause: str = MISTRANSLATED,
) -> CheckResult:
    """Run `module` eagerly and through `run` (a runtime); a mismatch raises naming `what`, and
    `cause`: the exporter's `mismatch_cause()` where `run` is a runtime on this machine."""
    with torch.no_grad():
        ref = module.eval()(*inputs).numpy()
    out = run([x.numpy() for x in inputs])[0]
    result = compare_outputs(ref, np.asarray(out), tol)
    if not result.ok:
        allowed = (f"SQNR {result.sqnr_db:.1f} dB, needs {tol.min_sqnr_db:g}" if result.sqnr_db is not None
                   else f"max abs error {result.max_abs_err:.3g}, allowed {tol.bound(result.max_ref):.3g}")
        raise PipelineError(f"{what}: runtime output differs from PyTorch ({allowed}); {cause}")
    return result


@dataclass(frozen=True)
class QuantGoal:
    """What an 8-bit artifact must keep of its float model on the held-out set, or it is not
    written: the share of inputs whose top-1 class both agree on, and the accuracy it may lose
    (0.01 is one point)."""

    min_agreement: float = 0.98
    max_accuracy_drop: float = 0.01


@dataclass(frozen=True)
class QuantQuality:
    """An 8-bit artifact against its float model, on the same held-out inputs."""

    samples: int
    agreement: float  # share of inputs with the same top-1 class
    float_accuracy: float
    quantized_accuracy: float
    sqnr_db: float  # signal-to-quantization-noise ratio of the output over all inputs

    @property
    def accuracy_change(self) -> float:
        return self.quantized_accuracy - self.float_accuracy

    def failures(self, goal: QuantGoal) -> list[str]:
        out = []
        if self.agreement < goal.min_agreement:
            out.append(f"top-1 agreement with the float model {self.agreement:.1%} is below {goal.min_agreement:.1%}")
        if -self.accuracy_change > goal.max_accuracy_drop:
            out.append(f"accuracy fell {-self.accuracy_change * 100:.1f} points ({self.float_accuracy:.3f} -> "
                       f"{self.quantized_accuracy:.3f}), more than {goal.max_accuracy_drop * 100:.1f}")
        return out

    def to_dict(self) -> dict[str, float]:
        return {"samples": self.samples, "agreement": self.agreement, "float_accuracy": self.float_accuracy,
                "quantized_accuracy": self.quantized_accuracy, "accuracy_change": self.accuracy_change,
                "sqnr_db": self.sqnr_db}


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """10·log10(signal power / quantization-noise power); inf where they are identical."""
    noise = float(np.sum((reference.astype(np.float64) - actual.astype(np.float64)) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def quantized_quality(float_logits: np.ndarray, quant_logits: np.ndarray, labels: np.ndarray) -> QuantQuality:
    """Both models' outputs (N x classes) on the same N inputs, with the inputs' true labels."""
    a, b = float_logits.argmax(1), quant_logits.argmax(1)
    return QuantQuality(int(len(labels)), float(np.mean(a == b)), float(np.mean(a == labels)),
                        float(np.mean(b == labels)), sqnr_db(float_logits, quant_logits))
