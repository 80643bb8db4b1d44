"""Numerical check of an exported artifact against eager PyTorch on the same input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from core.errors import PipelineError


@dataclass(frozen=True)
class Tolerance:
    """An output passes when max |actual - reference| <= atol + rtol * max |reference|.

    Relative to the output's magnitude rather than element by element: fp16 formats round
    near-zero elements to relative errors that say nothing about whether the graph is right.
    """

    atol: float
    rtol: float

    def bound(self, max_ref: float) -> float:
        return self.atol + self.rtol * max_ref


FP32 = Tolerance(atol=1e-4, rtol=1e-4)
FP16 = Tolerance(atol=1e-2, rtol=1e-2)


@dataclass(frozen=True)
class CheckResult:
    max_abs_err: float
    max_ref: float
    ok: bool


def compare_outputs(reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> CheckResult:
    if reference.shape != actual.shape:
        return CheckResult(float("inf"), float(np.abs(reference).max()), False)
    err = float(np.abs(reference - actual.astype(reference.dtype)).max()) if reference.size else 0.0
    max_ref = float(np.abs(reference).max()) if reference.size else 0.0
    return CheckResult(err, max_ref, bool(np.isfinite(err) and err <= tol.bound(max_ref)))


def check_against_torch(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    run: Callable[[list[np.ndarray]], list[np.ndarray]],
    tol: Tolerance,
    what: str,
) -> CheckResult:
    """Run `module` eagerly and through `run` (a runtime); a mismatch raises naming `what`."""
    with torch.no_grad():
        ref = module.eval()(*inputs).numpy()
    out = run([x.numpy() for x in inputs])[0]
    result = compare_outputs(ref, np.asarray(out), tol)
    if not result.ok:
        raise PipelineError(
            f"{what}: runtime output differs from PyTorch (max abs error {result.max_abs_err:.3g}, "
            f"allowed {tol.bound(result.max_ref):.3g}); the converter mistranslated it"
        )
    return result
