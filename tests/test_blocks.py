import pytest
import torch

from blocks import BLOCKS, BLOCK_SETS, create_block, register_block, resolve_block_set
from blocks.fbnet import ChannelShuffle, FBNetBlock
from blocks.mbconv import MBConv, SqueezeExcite
from core.errors import PipelineError

SHAPES = [(16, 16, 1), (16, 16, 2), (16, 24, 1), (16, 24, 2)]  # same / strided / wider / both


@pytest.mark.parametrize("name", BLOCKS.names())
@pytest.mark.parametrize("in_ch,out_ch,stride", SHAPES)
def test_block_forward_backward_and_shape(name, in_ch, out_ch, stride):
    torch.manual_seed(0)
    if not BLOCKS.get(name).supports(in_ch, out_ch, stride):
        with pytest.raises(PipelineError, match=f"cannot map {in_ch}->{out_ch}"):
            create_block(name, in_ch, out_ch, stride)
        return
    block = create_block(name, in_ch, out_ch, stride)
    x = torch.randn(2, in_ch, 10, 10, requires_grad=True)
    y = block(x)
    assert y.shape == (2, out_ch, 5 if stride == 2 else 10, 5 if stride == 2 else 10)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in block.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_fbnet_set_is_the_papers_nine_in_index_order():
    assert BLOCK_SETS.get("fbnet") == (
        "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


@pytest.mark.parametrize("name,kernel,expansion,groups", [("k3_e6", 3, 6, 1), ("k5_e1_g2", 5, 1, 2)])
def test_fbnet_block_structure(name, kernel, expansion, groups):
    b = create_block(name, 16, 16, 1)
    assert isinstance(b, FBNetBlock)
    assert b.expand[0].groups == groups and b.expand[0].out_channels == 16 * expansion
    assert b.depthwise[0].kernel_size == (kernel, kernel) and b.depthwise[0].groups == 16 * expansion
    assert b.project[0].groups == groups
    assert isinstance(b.shuffle, ChannelShuffle) == (groups == 2)
    assert b.residual
    assert not create_block(name, 16, 24, 1).residual and not create_block(name, 16, 16, 2).residual


def test_block_config_rebuilds_identical_block():
    b = create_block("k5_e3", 16, 24, 2)
    c = b.config
    rebuilt = FBNetBlock(c["in_ch"], c["out_ch"], c["stride"], kernel=c["kernel"], expansion=c["expansion"], groups=c["groups"])
    rebuilt.load_state_dict(b.state_dict())
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(b.eval()(x), rebuilt.eval()(x))


def test_skip_is_identity_only_when_shape_is_kept():
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(create_block("skip", 16, 16, 1)(x), x)
    assert sum(p.numel() for p in create_block("skip", 16, 24, 1).parameters()) > 0


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(4.0).reshape(1, 4, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_group2_blocks_refuse_odd_channels():
    with pytest.raises(PipelineError, match="cannot map 15->16"):
        create_block("k3_e1_g2", 15, 16, 1)


def test_registry_rejects_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered under the name 'k3_e1'"):
        register_block("k3_e1", lambda i, o, s: torch.nn.Identity())
    with pytest.raises(PipelineError, match="unknown block 'k7_e9'; valid names: k3_e1, k3_e1_g2"):
        create_block("k7_e9", 8, 8, 1)


def test_user_block_registered_by_constructor(tmp_path):
    register_block("test_avgpool", lambda i, o, s: torch.nn.Sequential(torch.nn.AvgPool2d(s), torch.nn.Conv2d(i, o, 1)))
    try:
        assert create_block("test_avgpool", 8, 16, 2)(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)
        f = tmp_path / "set.yaml"
        f.write_text("blocks: [k3_e1, test_avgpool]\n")
        assert resolve_block_set(str(f)) == ("k3_e1", "test_avgpool")
    finally:
        BLOCKS._entries.pop("test_avgpool")


@pytest.mark.parametrize("text,match", [
    ("blocks: [k3_e1, nope]\n", "unknown block 'nope'"),
    ("blocks: [k3_e1, k3_e1]\n", "lists a block twice"),
    ("other: 1\n", "needs a 'blocks' list"),
])
def test_bad_block_set_files(tmp_path, text, match):
    f = tmp_path / "set.yaml"
    f.write_text(text)
    with pytest.raises(PipelineError, match=match):
        resolve_block_set(str(f))


@pytest.mark.parametrize("name", [n for n in BLOCKS.names() if n != "identity"])
def test_block_config_names_its_shape(name):
    c = create_block(name, 16, 24, 2).config
    assert (c["in_ch"], c["out_ch"], c["stride"]) == (16, 24, 2)


def test_proxyless_set_is_mbconv_k357_e36_and_skip():
    assert BLOCK_SETS.get("proxyless") == (
        "mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6", "identity")


@pytest.mark.parametrize("name,kernel,expansion,se,act", [
    ("mb_k3_e1", 3, 1, False, "relu6"), ("mb_k7_e6", 7, 6, False, "relu6"), ("mb_k5_e4_se_hs", 5, 4, True, "hswish"),
])
def test_mbconv_structure(name, kernel, expansion, se, act):
    b = create_block(name, 16, 16, 1)
    assert isinstance(b, MBConv) and b.residual
    # MobileNetV2 has no expansion conv at e1; the depthwise conv then runs on the input itself.
    assert isinstance(b.expand, torch.nn.Identity) == (expansion == 1)
    assert b.depthwise[0].kernel_size == (kernel, kernel) and b.depthwise[0].groups == 16 * expansion
    assert isinstance(b.excite, SqueezeExcite) == se
    assert isinstance(b.depthwise[-1], torch.nn.Hardswish if act == "hswish" else torch.nn.ReLU6)
    assert not isinstance(b.project[-1], (torch.nn.ReLU6, torch.nn.Hardswish))  # linear bottleneck
    assert not create_block(name, 16, 24, 1).residual and not create_block(name, 16, 16, 2).residual


def test_mbconv_config_rebuilds_identical_block():
    b = create_block("mb_k5_e3_se", 16, 24, 2)
    c = dict(b.config)
    assert c.pop("type") == "mbconv"
    rebuilt = MBConv(c.pop("in_ch"), c.pop("out_ch"), c.pop("stride"), **c)
    rebuilt.load_state_dict(b.state_dict())
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(b.eval()(x), rebuilt.eval()(x))


def test_identity_only_where_the_shape_is_kept():
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(create_block("identity", 16, 16, 1)(x), x)
    with pytest.raises(PipelineError, match="cannot map 16->16 channels at stride 2"):
        create_block("identity", 16, 16, 2)
