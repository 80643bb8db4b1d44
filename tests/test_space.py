import pytest

from blocks import SPACES, resolve_space
from blocks.space import LayerShape
from pipeline.errors import PipelineError


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
    ("resolution: 16\nstages: [[8, 1, 3]]\n", "stride must be 1 or 2"),
    ("resolution: 16\nstages: [[8, 1]]\n", r"must be \[channels, layers, stride\]"),
    ("resolution: 16\nstages: [[8, 1, 1]]\ncolour: red\n", "unknown key.*colour"),
    ("resolution: '16'\nstages: [[8, 1, 1]]\n", "'resolution' = '16' has the wrong type"),
    ("resolution: 16\nstages: [[8, 1, 1]]\nblocks: [k3_e1, zzz]\n", "unknown block 'zzz'"),
    ("resolution: [16\n", "is not valid"),
])
def test_bad_space_files(tmp_path, text, match):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(PipelineError, match=match):
        resolve_space(str(f))


def test_unknown_space_lists_valid_names():
    with pytest.raises(PipelineError, match="unknown search space 'mobilenet'; valid names: fbnet, tiny"):
        resolve_space("mobilenet")
