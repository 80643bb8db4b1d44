"""Numerical check of an exported artifact against eager PyTorch on the same input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclass(frozen=True)
class CheckResult:
    max_abs_err: float
    max_ref: float
    ok: bool


def compare_outputs(reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> CheckResult:
    if reference.shape != actual.shape:
        return CheckResult(float("inf"), float(np.abs(reference).max()), False)
    err = float(np.abs(reference - actual).max()) if reference.size else 0.0
    ok = bool(np.allclose(actual, reference, atol=tol.atol, rtol=tol.rtol))
    return CheckResult(err, float(np.abs(reference).max()) if reference.size else 0.0, ok)


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
            f"tolerance atol={tol.atol} rtol={tol.rtol}); the converter mistranslated this block"
        )
    return result
