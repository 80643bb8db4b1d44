"""The super-net (every candidate in every layer) and the plain derived network."""

from __future__ import annotations


import torch
from torch import nn

from blocks.mixing import MixedLayer, MixingOptions, make_mixer
from blocks.registry import create_block
from blocks.space import SearchSpace, build_part


class _Body(nn.Module):
    """Stem -> layers -> head; shared by the super-net and the derived network."""

    def __init__(self, space: SearchSpace, num_classes: int, layers: nn.ModuleList) -> None:
        super().__init__()
        parts = dict(space.fixed_parts())
        self.space = space
        self.stem = build_part("stem", parts["stem"])
        self.layers = layers
        self.head_conv = build_part("head_conv", parts["head_conv"])
        # MobileNetV3's pooled 1x1 conv; an Identity (no weights, no state) where the space has none.
        self.feature_mix = build_part("feature_mix", parts["feature_mix"]) if "feature_mix" in parts else nn.Identity()
        cls = parts["classifier"]
        self.classifier = build_part("classifier", type(cls)(cls.in_ch, num_classes, 1, cls.height, cls.width))


class SuperNet(_Body):
    def __init__(self, space: SearchSpace, num_classes: int, mixing: str = "softmax",
                 options: MixingOptions = MixingOptions(), seed: int = 0) -> None:
        layers = nn.ModuleList(
            MixedLayer(space.candidates(i), s.in_ch, s.out_ch, s.stride)
            for i, s in enumerate(space.layers)
        )
        super().__init__(space, num_classes, layers)
        self.mixing = mixing
        self.mixer = make_mixer(mixing, options, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = self.mixer.forward(layer, x, self.training)
        return self.classifier(self.feature_mix(self.head_conv(x)))

    def alphas(self) -> list[torch.Tensor]:
        """α^(l) = softmax(θ^(l)) for every layer: what reports and the derivation use."""
        return [torch.softmax(layer.theta, dim=-1) for layer in self.layers]

    def latency_weights(self) -> list[torch.Tensor]:
        """The weights Lat(Θ) uses in the current step (α, or FBNet's Gumbel sample)."""
        return [self.mixer.latency_weights(layer) for layer in self.layers]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.theta for layer in self.layers]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def derive(self) -> tuple[str, ...]:
        """Keep argmax_j α_j^(l) in every layer."""
        return tuple(layer.names[int(torch.argmax(layer.theta))] for layer in self.layers)

    def get_active_subnet(self, blocks: tuple[str, ...]) -> "DerivedNet":
        """A plain network holding a copy of the super-net's weights for the chosen blocks."""
        net = DerivedNet(self.space, blocks, self.classifier[-1].out_features)
        net.stem.load_state_dict(self.stem.state_dict())
        net.head_conv.load_state_dict(self.head_conv.state_dict())
        net.feature_mix.load_state_dict(self.feature_mix.state_dict())
        net.classifier.load_state_dict(self.classifier.state_dict())
        for layer, block, name in zip(self.layers, net.layers, blocks):
            block.load_state_dict(layer.candidates[layer.names.index(name)].state_dict())
        return net


class DerivedNet(_Body):
    """The network an architecture describes: an ordinary nn.Module for training and export."""

    def __init__(self, space: SearchSpace, blocks: tuple[str, ...], num_classes: int) -> None:
        layers = nn.ModuleList(
            create_block(name, s.in_ch, s.out_ch, s.stride) for name, s in zip(blocks, space.layers)
        )
        super().__init__(space, num_classes, layers)
        self.blocks = tuple(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.feature_mix(self.head_conv(x)))
