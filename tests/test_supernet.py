import torch

from blocks.network import DerivedNet, SuperNet


def test_supernet_mixes_every_candidate_by_softmax_theta(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10).eval()
    layer = net.layers[0]
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([0.3, -1.0, 2.0, 0.5]))
        alpha = torch.softmax(layer.theta, -1)
        expected = sum(a * op(x) for a, op in zip(alpha, layer.candidates))
        assert torch.allclose(layer.run(x, range(4), alpha), expected, atol=1e-6)
        assert torch.allclose(net.mixer.forward(layer, x, training=True), expected, atol=1e-6)


def test_parameters_split_into_weights_and_thetas(micro_space):
    net = SuperNet(micro_space, 10)
    thetas, weights = net.arch_parameters(), net.weight_parameters()
    assert len(thetas) == len(micro_space.layers)
    assert len(thetas) + len(weights) == len(list(net.parameters()))
    assert not {id(p) for p in thetas} & {id(p) for p in weights}


def test_derive_takes_argmax_in_every_layer(micro_space):
    net = SuperNet(micro_space, 10)
    with torch.no_grad():
        for layer, k in zip(net.layers, [2, 0, 3]):
            layer.theta.zero_()
            layer.theta[k] = 1.0
    assert net.derive() == (micro_space.candidates(0)[2], micro_space.candidates(1)[0], micro_space.candidates(2)[3])


def test_active_subnet_equals_supernet_with_one_hot_alphas(micro_space):
    torch.manual_seed(0)
    net = SuperNet(micro_space, 10)
    choice = ("k5_e3", "k3_e6", "skip")
    with torch.no_grad():
        for layer, c in zip(net.layers, choice):
            layer.theta.fill_(-100.0)
            layer.theta[layer.names.index(c)] = 100.0
    net.eval()
    sub = net.get_active_subnet(choice).eval()
    assert isinstance(sub, DerivedNet) and sub.blocks == choice
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(net(x), sub(x), atol=1e-6)
