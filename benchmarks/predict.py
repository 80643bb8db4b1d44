"""Predicting a network's latency from a table: Lat(Θ) = fixed + Σ_l Σ_j t_j^(l) α_j^(l).

The plain sum of blocks timed alone misses what happens between blocks in a whole network
(per-call overhead paid once instead of per block, operator fusion, caches). A `Calibration`
fitted from whole-network measurements corrects it linearly:

    T = intercept + scale · (Σ rows) + Σ_j c_j · (number of layers using block j)

Because it is linear in the rows and in the block counts, it folds into adjusted per-layer
vectors t'_j^(l) = scale · t_j^(l) + c_j, so the search's expected latency stays a weighted
sum of α and everything downstream (predict, bounds, search) is unchanged.

An identity candidate's t_j^(l) is its edge cost where the table has the no-op rows to tell
it (`benchmarks.boundary`), not the empty graph it exports to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from benchmarks.boundary import layer_latency
from benchmarks.table import LatencyTable
from blocks.space import SearchSpace
from core.errors import PipelineError


@dataclass(frozen=True)
class Calibration:
    space_fingerprint: str
    intercept_ms: float
    scale: float
    per_block_ms: dict[str, float]
    fitted_on: int  # whole networks measured for the fit
    fitted_keys: tuple[str, ...] = ()  # their architectures, so evaluation can exclude them
    heldout: dict[str, float] = field(default_factory=dict)  # metrics on networks not fitted on
    created: str = ""
    # The network the fit's networks were timed against, repeat by repeat, and its median over
    # that run: the fit's milliseconds are ratios to it times `reference_ms`. A network timed
    # against it later is on the fit's scale whatever the machine's speed is then.
    reference_blocks: tuple[str, ...] = ()
    reference_ms: float | None = None

    @property
    def is_identity(self) -> bool:
        """A fit that found nothing better than the plain sum."""
        return self.intercept_ms == 0.0 and self.scale == 1.0 and not any(self.per_block_ms.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fitted_keys"], d["reference_blocks"] = list(self.fitted_keys), list(self.reference_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "Calibration":
        try:
            cal = cls(str(d["space_fingerprint"]), float(d["intercept_ms"]), float(d["scale"]),
                      {str(k): float(v) for k, v in d["per_block_ms"].items()}, int(d["fitted_on"]),
                      tuple(d.get("fitted_keys", ())), dict(d.get("heldout", {})), str(d.get("created", "")),
                      tuple(str(b) for b in d.get("reference_blocks") or ()),
                      None if d.get("reference_ms") is None else float(d["reference_ms"]))
            if not np.all(np.isfinite([cal.intercept_ms, cal.scale, *cal.per_block_ms.values(),
                                       *([cal.reference_ms] if cal.reference_ms is not None else [])])):
                raise ValueError("a coefficient is not a finite number")
            return cal
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise PipelineError(f"{where}: calibration is malformed ({e}); refit it with 'pipeline validate --fit'") from None


def table_calibration(table: LatencyTable, space: SearchSpace) -> Calibration | None:
    data = table.calibration.get(space.fingerprint)
    return None if data is None else Calibration.from_dict(data, f"latency table for {table.target}/{table.device}")


def arch_key(blocks: tuple[str, ...] | list[str]) -> str:
    return ",".join(blocks)


@dataclass(frozen=True)
class LatencyModel:
    """Per-layer latency vectors t^(l) (ms, one entry per candidate) and the fixed parts' ms."""

    per_layer: tuple[torch.Tensor, ...]
    fixed_ms: float
    calibration: Calibration | None = None

    @property
    def name(self) -> str:
        """How predictions are made, for every printout that shows one."""
        if self.calibration is None:
            return "table sum"
        return f"calibrated table sum (fitted on {self.calibration.fitted_on} whole networks)"

    @classmethod
    def from_table(cls, table: LatencyTable, space: SearchSpace, calibrated: bool = True) -> "LatencyModel":
        """The table's model for `space`, calibrated when the table carries a fit for it."""
        table.check_fits(space)
        per_layer = tuple(
            torch.tensor([layer_latency(table, b, shape) for b in space.candidates(i)], dtype=torch.float64)
            for i, shape in enumerate(space.layers)
        )
        fixed = float(sum(table.latency(name, shape) for name, shape in space.fixed_parts()))
        plain = cls(per_layer, fixed)
        cal = table_calibration(table, space) if calibrated else None
        return plain if cal is None else plain.with_calibration(cal, space)

    def with_calibration(self, cal: Calibration, space: SearchSpace) -> "LatencyModel":
        """Fold a calibration into the per-layer vectors (an identity fit changes nothing)."""
        assert self.calibration is None, "calibrate the plain table sum"
        if cal.is_identity:
            return self
        adjusted = tuple(
            t * cal.scale + torch.tensor([cal.per_block_ms.get(b, 0.0) for b in space.candidates(i)], dtype=torch.float64)
            for i, t in enumerate(self.per_layer)
        )
        return LatencyModel(adjusted, cal.intercept_ms + cal.scale * self.fixed_ms, cal)

    def expected(self, alphas: list[torch.Tensor]) -> torch.Tensor:
        """Differentiable expected latency (ms) of the super-net under mixing weights α."""
        searchable = sum((t.to(a.device, a.dtype) * a).sum() for t, a in zip(self.per_layer, alphas))
        return searchable + self.fixed_ms

    def predict(self, space: SearchSpace, blocks: tuple[str, ...]) -> float:
        """Latency (ms) of one architecture."""
        return self.fixed_ms + sum(
            float(t[space.candidates(i).index(b)]) for i, (t, b) in enumerate(zip(self.per_layer, blocks))
        )

    def bounds(self) -> tuple[float, float]:
        """The fastest and slowest architecture the space holds, under this model."""
        lo = self.fixed_ms + sum(float(t.min()) for t in self.per_layer)
        hi = self.fixed_ms + sum(float(t.max()) for t in self.per_layer)
        return lo, hi


def _solve(x: np.ndarray, y: np.ndarray, ridge: float | None) -> np.ndarray:
    """Weighted least squares (relative errors matter: weight 1/y); `ridge` None drops the
    per-block columns, else shrinks them toward zero."""
    w = 1.0 / y
    if ridge is None:
        coef, *_ = np.linalg.lstsq(x[:, :2] * w[:, None], y * w, rcond=None)
        return np.concatenate([coef, np.zeros(x.shape[1] - 2)])
    reg = np.sqrt(ridge) * np.eye(x.shape[1])[2:]
    coef, *_ = np.linalg.lstsq(np.vstack([x * w[:, None], reg]), np.concatenate([y * w, np.zeros(len(reg))]), rcond=None)
    return coef


def _loo_errors(x: np.ndarray, y: np.ndarray, ridge: float | None) -> np.ndarray:
    """Relative errors, leave-one-out: how the fit does on networks it did not see."""
    errs = []
    for k in range(len(y)):
        keep = np.arange(len(y)) != k
        coef = _solve(x[keep], y[keep], ridge)
        errs.append(abs(float(x[k] @ coef) - y[k]) / y[k])
    return np.asarray(errs)


RIDGES: tuple[float | None, ...] = (None, 10.0, 1.0, 0.1, 0.01)  # simplest first: no per-block terms
# Per-block terms are tried only with at least this many whole networks per term (90 for
# FBNet's 9 blocks). With fewer they fit the machine's noise: refitting 40 random half/half
# splits of each of 33 FBNet validate runs here (20 networks fit, 20 judge; 11 runs per local
# target), intercept and scale alone were as good as any per-block fit on average on every
# target (held-out median error 1.47 / 1.54 / 1.83% on android / android-executorch / desktop,
# against 1.49 / 1.55 / 1.85% letting leave-one-out choose), and the per-block fits that
# leave-one-out did choose (3-5% of splits) could miss badly: one android run's fit, chosen
# with its leave-one-out error halved, put a held-out network with 6 skips 15% off where
# intercept and scale alone were within 9% (`perf/calibration_terms.py` measures this).
MIN_NETWORKS_PER_TERM = 10


def fit_coefficients(x: np.ndarray, y: np.ndarray, min_networks_per_term: int = MIN_NETWORKS_PER_TERM) -> np.ndarray:
    """Coefficients of T = x @ coef for rows x = [1, table sum, count of each block] and whole-
    network times y: intercept and scale, plus per-block terms where there are enough networks.

    Block counts sum to the number of layers (collinear with the intercept) and there are
    often fewer networks than blocks, so the per-block terms are ridge-shrunk, or dropped.
    Which, leave-one-out error decides by the one-standard-error rule (Hastie et al., The
    Elements of Statistical Learning, 7.10): the simplest fit within one standard error of the
    best. Taking the best outright let per-block terms fit the machine's noise: refitting 40
    random half/half splits of each of 18 FBNet validate runs here, it had a held-out median
    error of 1.68% and a network outside ±10% in 9.2% of splits; this rule 1.60% and 6.4%.
    """
    ridges = RIDGES if len(y) >= min_networks_per_term * (x.shape[1] - 2) else (None,)
    errors = {r: _loo_errors(x, y, r) for r in ridges}
    best = min(ridges, key=lambda r: errors[r].mean())
    within = errors[best].mean() + errors[best].std(ddof=1) / np.sqrt(len(y))
    pick = next(r for r in ridges if errors[r].mean() <= within)
    plain_error = float(np.mean(np.abs(x[:, 1] - y) / y))
    # With few networks a fit can do worse than no fit at all: then keep the plain sum
    # (intercept 0, scale 1), which leave-one-out cannot overfit.
    if errors[pick].mean() >= plain_error:
        return np.r_[0.0, 1.0, np.zeros(x.shape[1] - 2)]
    return _solve(x, y, pick)


def calibration_design(plain: LatencyModel, space: SearchSpace, archs: list[tuple[str, ...]]) -> tuple[np.ndarray, list[str]]:
    """`fit_coefficients`' rows for `archs`, and the blocks its count columns are of."""
    blocks = sorted({b for i in range(len(space.layers)) for b in space.candidates(i)})
    return np.array([[1.0, plain.predict(space, a)] + [float(a.count(b)) for b in blocks] for a in archs]), blocks


def fit_calibration(plain: LatencyModel, space: SearchSpace, archs: list[tuple[str, ...]],
                    measured_ms: list[float]) -> Calibration:
    """Fit T = intercept + scale·(table sum) + Σ_j c_j·count_j to whole-network measurements
    (see `fit_coefficients`)."""
    assert plain.calibration is None, "fit on the plain table sum"
    if len(archs) < MIN_CALIBRATION_NETWORKS:
        raise PipelineError(f"a calibration needs at least {MIN_CALIBRATION_NETWORKS} measured networks to fit on, "
                            f"got {len(archs)}; pass --samples {2 * MIN_CALIBRATION_NETWORKS} or more")
    x, blocks = calibration_design(plain, space, archs)
    coef = fit_coefficients(x, np.asarray(measured_ms, dtype=float))
    return Calibration(space.fingerprint, float(coef[0]), float(coef[1]),
                       {blk: float(c) for blk, c in zip(blocks, coef[2:]) if c != 0.0}, len(archs),
                       tuple(arch_key(a) for a in archs))


# ------------------------------------------------------------------ is a fit credible?
# A fit is stored and used only if it passes all of these (docs/validate.md, "When a calibration
# is refused"). Intercept and scale are two coefficients: with 8 networks the fit keeps 6 degrees
# of freedom and leave-one-out has 8 folds; a `validate --samples 10` fit on 5 networks once
# came out at scale 0.127 and was stored and used.
MIN_CALIBRATION_NETWORKS = 8
# A block inside a network costs between half and twice what it costs alone: what a whole
# network pays once instead of per block (per-call overhead, layout edges) is the intercept's,
# not the scale's. A scale beyond that is the fit taking noise, or the machine's drift during
# the measurement, for the blocks' cost (docs/validate.md lists the fits measured here).
SCALE_RANGE = (0.5, 2.0)
# How well the scale must be pinned down when it is out of range: the estimate of how many
# networks would do is the number at which its standard error would shrink to this.
SCALE_SE_GOAL = 0.05


@dataclass(frozen=True)
class Refusal:
    """Why a fitted calibration is not credible, how many networks a new fit would want (None
    where more would not help), and what to do."""

    reason: str
    networks_needed: int | None
    advice: str


def _more_networks(n: int) -> str:
    return f"about {n} networks to fit on would do ('pipeline validate --fit --samples {2 * n}')"


# More networks do not change a fit that these networks already pin down: then the table and
# the measurements disagree, and the table is what to measure again.
_DISAGREE = ("these networks pin the fit down, so more would not change it: the table does not describe the machine "
             "the networks ran on; measure the table again ('pipeline benchmark --force') or check the measurements")


def scale_standard_error(plain: LatencyModel, space: SearchSpace, archs: list[tuple[str, ...]],
                         measured_ms: list[float]) -> float:
    """The standard error of the scale of an intercept-and-scale fit (weighted least squares as
    `_solve` fits it), from its residuals: how well these networks pin the scale down."""
    x, _ = calibration_design(plain, space, archs)
    y = np.asarray(measured_ms, dtype=float)
    a, b = x[:, :2] / y[:, None], np.ones_like(y)  # weights 1/y
    if len(y) <= 2:
        return float("inf")
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    sigma2 = float(np.sum((b - a @ coef) ** 2)) / (len(y) - 2)
    cov = sigma2 * np.linalg.pinv(a.T @ a)
    return float(np.sqrt(max(cov[1, 1], 0.0)))


def refusal(cal: Calibration, plain: LatencyModel, fit_ms: list[float], heldout_err_pct: tuple[float, float] | None,
            scale_se: float) -> Refusal | None:
    """None when `cal` is credible, else why not. `fit_ms`: the fitted networks' measurements;
    `heldout_err_pct`: median absolute error (plain sum, calibrated) on networks not fitted on
    (None where there are none); `scale_se`: `scale_standard_error` of the fit."""
    n = cal.fitted_on
    if n < MIN_CALIBRATION_NETWORKS:
        return Refusal(f"it was fitted on {n} networks, fewer than the {MIN_CALIBRATION_NETWORKS} a fit needs",
                       MIN_CALIBRATION_NETWORKS, _more_networks(MIN_CALIBRATION_NETWORKS))
    if cal.is_identity:
        return None  # the plain sum itself: nothing to refuse
    why = _unphysical(cal, plain, fit_ms, scale_se)
    if why:
        needed = int(np.ceil(n * (scale_se / SCALE_SE_GOAL) ** 2))
        if needed <= n:
            return Refusal(why, None, _DISAGREE)
        return Refusal(why, needed, _more_networks(needed))
    if heldout_err_pct is not None and heldout_err_pct[1] > heldout_err_pct[0]:
        return Refusal(f"on the networks held out it is further off (median {heldout_err_pct[1]:.1f}%) than the "
                       f"plain table sum ({heldout_err_pct[0]:.1f}%)", None,
                       "predictions keep the plain table sum, which did better on the networks held out")
    return None


def _unphysical(cal: Calibration, plain: LatencyModel, fit_ms: list[float], scale_se: float) -> str:
    """Why intercept or scale are outside what a machine can do ("" when they are not)."""
    lo_scale, hi_scale = SCALE_RANGE
    if not lo_scale <= cal.scale <= hi_scale:
        return (f"its scale {cal.scale:.3f} (± {scale_se:.3f}) is outside {lo_scale}-{hi_scale}: a block inside a "
                "network does not cost a fraction or a multiple of its time alone")
    fastest = cal.intercept_ms + cal.scale * plain.bounds()[0]
    if fastest <= 0:
        return f"its intercept {cal.intercept_ms:+.4f} ms predicts {fastest:.4f} ms for the space's fastest network"
    if cal.intercept_ms >= min(fit_ms):
        return (f"its intercept {cal.intercept_ms:+.4f} ms is more than the fastest network it was fitted on takes "
                f"in all ({min(fit_ms):.4f} ms)")
    return ""
