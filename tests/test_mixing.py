"""Each mixing strategy's forward and its gradient for Θ, on the micro space."""

import math

import pytest
import torch

from blocks.mixing import MixingOptions
from blocks.network import SuperNet


def _layer_with_counter(net):
    layer = net.layers[1]  # 8 -> 16 channels, stride 2: all four candidates are real blocks
    calls = []
    for j, op in enumerate(layer.candidates):
        op.register_forward_hook(lambda m, i, o, j=j: calls.append(j))
    return layer, calls


def _x():
    return torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(1))


def test_softmax_runs_every_candidate_and_theta_gets_the_chain_rule_gradient(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10, "softmax").train()
    layer, calls = _layer_with_counter(net)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([0.3, -1.0, 2.0, 0.5]))
    x = _x()
    out = net.mixer.forward(layer, x, training=True)
    assert sorted(calls) == [0, 1, 2, 3]
    outs = [op(x).detach() for op in layer.candidates]
    g = torch.randn_like(out)
    (out * g).sum().backward()
    p = torch.softmax(layer.theta.detach(), -1)
    dp = torch.stack([(g * o).sum() for o in outs])
    expected = p * (dp - (p * dp).sum())  # softmax Jacobian
    assert torch.allclose(layer.theta.grad, expected, rtol=1e-4, atol=1e-6)


def test_gumbel_forward_uses_one_sample_for_output_and_latency(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10, "gumbel", MixingOptions(temperature=5.0), seed=3).train()
    layer, calls = _layer_with_counter(net)
    x = _x()
    out = net.mixer.forward(layer, x, training=True)
    sample = layer.sample
    assert sorted(calls) == [0, 1, 2, 3] and float(sample.detach().sum()) == pytest.approx(1.0)
    assert torch.allclose(out, layer.run(x, range(4), sample), atol=1e-6)
    assert net.mixer.latency_weights(layer) is sample
    # a fresh draw differs; the same seed reproduces the draw
    net.mixer.forward(layer, x, training=True)
    assert not torch.allclose(layer.sample, sample)
    again = SuperNet(micro_space, 10, "gumbel", MixingOptions(temperature=5.0), seed=3).train()
    again.load_state_dict(net.state_dict())
    again.mixer.forward(again.layers[1], x, training=True)
    assert torch.allclose(again.layers[1].sample, sample)
    # θ gets a gradient through the sample
    out.sum().backward()
    assert layer.theta.grad is not None and float(layer.theta.grad.abs().sum()) > 0


def test_gumbel_temperature_follows_its_schedule_and_sharpens_samples(micro_space):
    net = SuperNet(micro_space, 10, "gumbel")
    m = net.mixer
    for epoch in (0, 1, 9):  # the default: from 5.0 to 0.34 over a 10-epoch search
        m.set_epoch(epoch)
        assert m.temperature == pytest.approx(5.0 * math.exp(-0.3) ** epoch)
    fbnet = SuperNet(micro_space, 10, "gumbel", MixingOptions(temperature=5.0, temperature_decay=0.045)).mixer
    fbnet.set_epoch(89)
    assert fbnet.temperature == pytest.approx(5.0 * 0.956**89, rel=1e-2)  # FBNet's, over its 90 epochs
    cold = SuperNet(micro_space, 10, "gumbel", MixingOptions(temperature=1e-3), seed=0).train()
    cold.mixer.forward(cold.layers[0], torch.randn(1, 8, 8, 8), training=True)
    assert float(cold.layers[0].sample.detach().max()) > 0.999  # near one-hot at a low temperature
    # evaluation uses α itself, without noise
    net.eval()
    x = torch.randn(1, 8, 8, 8)
    layer = net.layers[0]
    assert torch.allclose(net.mixer.forward(layer, x, training=False),
                          layer.run(x, range(4), torch.softmax(layer.theta, -1)))


def test_sampled_w_step_runs_one_path_and_leaves_theta_alone(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10, "sampled", seed=0).train()
    layer, calls = _layer_with_counter(net)
    net.mixer.arch_step = False
    x = _x()
    out = net.mixer.forward(layer, x, training=True)
    assert len(calls) == 1
    assert torch.allclose(out, layer.candidates[calls[0]](x))
    out.sum().backward()
    assert layer.theta.grad is None


def test_sampled_theta_step_runs_two_paths_with_proxylessnas_gradient(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10, "sampled", MixingOptions(paths=2), seed=5).train()
    layer, calls = _layer_with_counter(net)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([0.2, -0.4, 1.0, 0.1]))
    net.mixer.arch_step = True
    x = _x()
    out = net.mixer.forward(layer, x, training=True)
    idx = layer.sampled_idx
    assert len(idx) == 2 and sorted(calls) == sorted(idx)
    outs = {j: layer.candidates[j](x).detach() for j in idx}
    chosen = [j for j in idx if torch.allclose(out, outs[j], atol=1e-6)]
    assert len(chosen) == 1  # forward is one path's output, exactly
    g = torch.randn_like(out)
    (out * g).sum().backward()
    p = torch.softmax(layer.theta.detach()[idx], -1)
    dg = torch.stack([(g * outs[j]).sum() for j in idx])
    expected = p * (dg - (p * dg).sum())  # ∂L/∂θ_i = Σ_j ∂L/∂g_j p_j (δ_ij − p_i)
    grad = layer.theta.grad
    assert torch.allclose(grad[idx], expected, rtol=1e-4, atol=1e-6)
    others = [j for j in range(4) if j not in idx]
    assert torch.all(grad[others] == 0)


def test_sampled_rescale_keeps_unsampled_paths_probabilities(micro_space):
    net = SuperNet(micro_space, 10, "sampled", seed=2).train()
    layer = net.layers[0]
    net.mixer.arch_step = True
    net.mixer.forward(layer, torch.randn(1, 8, 8, 8), training=True)
    idx = layer.sampled_idx
    others = [j for j in range(4) if j not in idx]
    before = torch.softmax(layer.theta.detach(), -1)[others].clone()
    with torch.no_grad():  # an optimiser step that moved the sampled θs
        layer.theta[idx[0]] += 0.7
        layer.theta[idx[1]] -= 0.2
    net.mixer.after_theta_step([layer])
    after = torch.softmax(layer.theta.detach(), -1)[others]
    assert torch.allclose(before, after, atol=1e-6)
    assert layer.sampled_idx is None


def test_sampled_evaluation_runs_the_most_likely_path(micro_space):
    net = SuperNet(micro_space, 10, "sampled").eval()
    layer, calls = _layer_with_counter(net)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([0.0, 0.0, 3.0, 0.0]))
    net.mixer.forward(layer, _x(), training=False)
    assert calls == [2]
