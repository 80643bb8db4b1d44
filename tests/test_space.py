import pytest

from blocks import SPACES, resolve_space
from blocks.space import LayerShape
from core.errors import PipelineError


def test_fbnet_space_matches_the_paper():
    s = SPACES.get("fbnet")
    assert len(s.layers) == 22 and s.size() == 9**22
    assert s.resolution == 224 and s.stem_channels == 16 and s.stem_stride == 2 and s.head_channels == 1984
    assert [l.out_ch for l in s.layers] == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    assert s.layers[0] == LayerShape(16, 16, 1, 112, 112)
    assert s.layers[1] == LayerShape(16, 24, 2, 112, 112) and s.layers[2] == LayerShape(24, 24, 1, 56, 56)
    assert s.layers[-1] == LayerShape(184, 352, 1, 7, 7)
    assert dict(s.fixed_parts())["head_conv"] == LayerShape(352, 1984, 1, 7, 7)


def test_space_file_yaml_and_toml_agree(tmp_path, micro_space):
    toml = tmp_path / "micro.toml"
    toml.write_text('name = "micro"\nresolution = 16\nin_channels = 1\nnum_classes = 10\nstem_channels = 8\n'
                    'stem_stride = 2\nhead_channels = 32\nblocks = ["k3_e1", "k3_e6", "k5_e3", "skip"]\n'
                    "stages = [[8, 1, 1], [16, 2, 2]]\n")
    t = resolve_space(str(toml))
    assert t.fingerprint == micro_space.fingerprint
    assert [l.key for l in t.layers] == ["8x8x8-8-s1", "8x8x8-16-s2", "16x4x4-16-s1"]


@pytest.mark.parametrize("text,match", [
    ("resolution: 16\nstages: [[8, 1, 3]]\n", r"stages\.0\.stride = 3: expected 1 or 2"),
    ("resolution: 16\nstages: [[8, 1]]\n", r"stages\.0 = \[8, 1\]: expected \[channels, layers, stride\]"),
    ("resolution: 16\nstages: [[8, 1, 1]]\ncolour: red\n", "unknown key.*colour"),
    ("resolution: '16'\nstages: [[8, 1, 1]]\n", "resolution = '16': expected an integer from 8 to 1024"),
    ("resolution: 16\nstages: [[8, 1, 1]]\nblocks: [k3_e1, zzz]\n", "unknown block 'zzz'"),
    ("resolution: [16\n", "is not valid"),
])
def test_bad_space_files(tmp_path, text, match):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(PipelineError, match=match):
        resolve_space(str(f))


def test_unknown_space_lists_valid_names():
    with pytest.raises(PipelineError, match="unknown search space 'mobilenet'; valid names: fbnet, tiny, proxyless, ofa"):
        resolve_space("mobilenet")


def test_existing_spaces_keep_their_fingerprints():
    # Tables, architectures and checkpoints on disk are tied to these: they must not move.
    assert SPACES.get("fbnet").fingerprint == "1d6a078a1ca27029"
    assert SPACES.get("tiny").fingerprint == "e009b6e884f4a771"


def test_proxyless_space_matches_the_paper():
    s = SPACES.get("proxyless")
    assert len(s.layers) == 22 and s.stem_channels == 32 and s.head_channels == 1280
    assert [l.out_ch for l in s.layers] == [16] + [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    assert s.layers[0] == LayerShape(32, 16, 1, 112, 112) and s.candidates(0) == ("mb_k3_e1",)
    mb = ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6")
    firsts = {1, 5, 9, 13, 17, 21}  # a stage's first layer changes the shape: no skip there
    for i in range(1, 22):
        assert s.candidates(i) == (mb if i in firsts else mb + ("identity",))
    assert s.size() == 6**6 * 7**15
    assert dict(s.fixed_parts())["classifier"] == LayerShape(1280, 1000, 1, 7, 7)


def test_ofa_space_matches_the_note10_tables():
    s = SPACES.get("ofa")
    assert len(s.layers) == 21 and s.candidates(0) == ("mb_k3_e1",)
    assert [l.out_ch for l in s.layers] == [24] + [32] * 4 + [48] * 4 + [96] * 4 + [136] * 4 + [192] * 4
    assert s.candidates(1) == tuple(f"mb_k{k}_e{e}" for k in (3, 5, 7) for e in (3, 4, 6))
    assert s.candidates(3)[-1] == "identity" and "identity" not in s.candidates(2)  # depth 2..4
    assert all(b.endswith("_se_hs") for b in s.candidates(20)[:-1])
    assert s.size() == (9 * 9 * 10 * 10) ** 5
    assert [n for n, _ in s.fixed_parts()] == ["stem", "head_conv", "feature_mix", "classifier"]
    assert dict(s.fixed_parts())["classifier"] == LayerShape(1536, 1000, 1, 1, 1)


STAGED = """\
resolution: 16
in_channels: 1
num_classes: 10
stem_channels: 8
head_channels: 32
feature_mix_channels: 24
blocks: proxyless
stages:
  - {channels: 8, layers: 1, stride: 1, blocks: [mb_k3_e1]}
  - [16, 2, 2]
"""


def test_stage_blocks_round_trip_and_fix_a_layer(tmp_path):
    from blocks.space import space_from_dict
    f = tmp_path / "staged.yaml"
    f.write_text(STAGED)
    s = resolve_space(str(f))
    assert s.candidates(0) == ("mb_k3_e1",) and s.candidates(2)[-1] == "identity"
    d = s.to_dict()
    assert d["stages"] == [{"channels": 8, "layers": 1, "stride": 1, "blocks": ["mb_k3_e1"]}, [16, 2, 2]]
    back = space_from_dict(d, "round trip")
    assert back.fingerprint == s.fingerprint and back.candidates(0) == ("mb_k3_e1",)
    other = space_from_dict({**d, "stages": [[8, 1, 1], [16, 2, 2]]}, "no stage blocks")
    assert other.fingerprint != s.fingerprint


def test_space_with_feature_mix_builds_and_runs(tmp_path):
    import torch

    from blocks.network import DerivedNet, SuperNet
    f = tmp_path / "staged.yaml"
    f.write_text(STAGED)
    s = resolve_space(str(f))
    torch.manual_seed(0)
    net = SuperNet(s, 10)
    arch = ("mb_k3_e1", "mb_k5_e6", "identity")
    with torch.no_grad():
        for layer, c in zip(net.layers, arch):
            layer.theta.fill_(-100.0)
            layer.theta[layer.names.index(c)] = 100.0
    net.eval()
    sub = net.get_active_subnet(arch).eval()
    assert isinstance(sub, DerivedNet) and sub.feature_mix[1].out_channels == 24
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(net(x), sub(x), atol=1e-6) and sub(x).shape == (2, 10)


@pytest.mark.parametrize("stage,match", [
    ("{channels: 8, layers: 1, stride: 1, blocks: [zzz]}", "unknown block 'zzz'"),
    ("{channels: 8, layers: 1, stride: 1, blocks: [mb_k3_e1, mb_k3_e1]}", "lists a block twice"),
    ("{channels: 8, layers: 1, stride: 1, colour: red}", "unknown key.*colour"),
    ("{channels: 8, layers: 1, stride: 1, blocks: 3}", "block-set name or a list"),
    ("{channels: 16, layers: 1, stride: 2, blocks: [identity]}", "no block of the set fits layer 0"),
])
def test_bad_stage_blocks(tmp_path, stage, match):
    f = tmp_path / "s.yaml"
    f.write_text(f"resolution: 16\nstem_channels: 8\nstages:\n  - {stage}\n")
    with pytest.raises(PipelineError, match=match):
        resolve_space(str(f))


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_round_trips_through_its_dict(name):
    from blocks.space import space_from_dict
    s = SPACES.get(name)
    back = space_from_dict(s.to_dict(), f"space '{name}'")
    assert back.fingerprint == s.fingerprint and back.layers == s.layers
    assert [back.candidates(i) for i in range(len(s.layers))] == [s.candidates(i) for i in range(len(s.layers))]
    assert back.fixed_parts() == s.fixed_parts()
