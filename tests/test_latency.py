import math

import pytest
import torch

from benchmarks.predict import LatencyModel
from pipeline.training.losses import LOSSES, LossOptions
from tests.conftest import make_table


def _random_alphas(space, seed=0):
    g = torch.Generator().manual_seed(seed)
    thetas = [torch.randn(len(space.candidates(i)), generator=g, requires_grad=True) for i in range(len(space.layers))]
    return thetas, [torch.softmax(t, -1) for t in thetas]


def test_expected_latency_equals_the_formula_and_its_gradient(micro_space, micro_table):
    model = LatencyModel.from_table(micro_table, micro_space)
    thetas, alphas = _random_alphas(micro_space)
    lat = model.expected(alphas)
    # Lat(Θ) = fixed + Σ_l Σ_j t_j^(l) α_j^(l), with t from the hand-made table (fixed parts cost 0.5 each)
    t = [[{"skip": 0.1, "k3_e1": 1.0, "k5_e3": 2.0, "k3_e6": 3.0}[b] for b in micro_space.candidates(i)]
         for i in range(len(micro_space.layers))]
    by_hand = 1.5 + sum(sum(tj * float(a) for tj, a in zip(tl, al.detach())) for tl, al in zip(t, alphas))
    assert float(lat.detach()) == pytest.approx(by_hand, rel=1e-6)
    lat.backward()
    for theta, alpha, tl in zip(thetas, alphas, t):
        a = alpha.detach()
        tl = torch.tensor(tl)
        # d/dθ_k Σ_j t_j softmax(θ)_j = α_k (t_k - Σ_j α_j t_j)
        assert torch.allclose(theta.grad, a * (tl - (a * tl).sum()), atol=1e-6)


def test_predict_is_the_sum_of_rows_and_bounds_span_the_space(micro_space, micro_table):
    model = LatencyModel.from_table(micro_table, micro_space)
    assert model.predict(micro_space, ("k3_e1", "k3_e6", "skip")) == pytest.approx(1.5 + 1.0 + 3.0 + 0.1)
    assert model.bounds() == pytest.approx((1.5 + 0.3, 1.5 + 9.0))


def test_one_hot_alphas_give_the_architectures_prediction(micro_space, micro_table):
    model = LatencyModel.from_table(micro_table, micro_space)
    arch = ("k5_e3", "skip", "k3_e6")
    alphas = [torch.tensor([1.0 if n == b else 0.0 for n in micro_space.candidates(i)]) for i, b in enumerate(arch)]
    assert float(model.expected(alphas)) == pytest.approx(model.predict(micro_space, arch))


def test_additive_and_multiplicative_losses():
    ce, lat = torch.tensor(2.0), torch.tensor(20.0, requires_grad=True)
    o = LossOptions(lam=0.5, a=0.2, b=0.6)
    assert float(LOSSES.get("add")(ce, lat, o).detach()) == pytest.approx(2.0 + 0.5 * 20.0)
    mul = LOSSES.get("mul")(ce, lat, o)
    assert float(mul.detach()) == pytest.approx(2.0 * 0.2 * math.log(20000.0) ** 0.6)
    mul.backward()
    # d/dLat [CE a (log 1000 Lat)^b] = CE a b (log 1000 Lat)^(b-1) / Lat
    assert float(lat.grad) == pytest.approx(2.0 * 0.2 * 0.6 * math.log(20000.0) ** -0.4 / 20.0, rel=1e-5)


def test_target_loss_pulls_latency_to_the_target_from_both_sides():
    o = LossOptions(lam=2.0, target_ms=10.0)
    for lat_ms, sign in ((15.0, 1.0), (5.0, -1.0)):
        lat = torch.tensor(lat_ms, requires_grad=True)
        loss = LOSSES.get("target")(torch.tensor(1.0), lat, o)
        assert float(loss.detach()) == pytest.approx(1.0 + 2.0 * abs(lat_ms / 10.0 - 1.0))
        loss.backward()
        assert float(lat.grad) == pytest.approx(sign * 2.0 / 10.0)  # descent moves Lat towards 10 ms


def test_log_loss_trades_the_same_relative_latency_on_any_device():
    o = LossOptions(lam=1.0)
    for scale in (0.05, 5.0, 75.0):  # a tiny net, a desktop, a phone
        lat = torch.tensor(scale, requires_grad=True)
        loss = LOSSES.get("log")(torch.tensor(1.0), lat, o)
        loss.backward()
        assert float(loss.detach()) == pytest.approx(1.0 + math.log(scale))
        assert float(lat.grad) * scale == pytest.approx(1.0)  # d loss / d ln Lat = λ everywhere


def test_multiplicative_loss_is_finite_for_sub_millisecond_latency():
    lat = torch.tensor(0.05, requires_grad=True)  # 50 µs: log(ms) would be negative
    loss = LOSSES.get("mul")(torch.tensor(1.0), lat, LossOptions())
    loss.backward()
    assert math.isfinite(float(loss.detach())) and math.isfinite(float(lat.grad)) and float(lat.grad) > 0


def test_table_missing_a_row_is_named(micro_space):
    table = make_table(micro_space)
    key = next(k for k in table.rows if k.startswith("k3_e6/"))
    del table.rows[key]
    from core.errors import PipelineError
    with pytest.raises(PipelineError, match=f"no row '{key}'"):
        LatencyModel.from_table(table, micro_space)
