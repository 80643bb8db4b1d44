"""Importing latency tables measured elsewhere: the published phone tables and bad inputs."""

import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from benchmarks.importers import import_table
from benchmarks.predict import LatencyModel
from benchmarks.table import load_table
from blocks import SPACES, resolve_space
from core.errors import PipelineError
from tests.conftest import make_table

# The published tables ship in the package, with their provenance in the folder's README.md.
TABLES = Path(__file__).resolve().parents[1] / "benchmarks/data/device-tables"
PIXEL1 = TABLES / "pixel1_proxylessnas_lut.yaml"
NOTE10 = TABLES / "note10_ofa_lut_224.yaml"


def _mb_key(h, cin, cout, stride, kernel, expand, se_hs=None):
    """A lookup-table key written out as the published files spell it."""
    out = (h - 1) // stride + 1
    key = (f"expanded_conv-input:{h}x{h}x{cin}-output:{out}x{out}x{cout}-expand:{expand}"
           f"-kernel:{kernel}-stride:{stride}-idskip:{int(stride == 1 and cin == cout)}")
    return key if se_hs is None else key + f"-se:{se_hs[0]}-hs:{se_hs[1]}"


# ---------------------------------------------------------------------------- ProxylessNAS, Pixel 1
# (input size, in, out, stride) of proxyless's 22 layers.
PROXYLESS_LAYERS = [(112, 32, 16, 1)] + [
    (h if i == 0 else h // s, cin if i == 0 else c, c, s if i == 0 else 1)
    for h, cin, c, s in [(112, 16, 24, 2), (56, 24, 40, 2), (28, 40, 80, 2), (14, 80, 96, 1), (14, 96, 192, 2)]
    for i in range(4)
] + [(7, 192, 320, 1)]


def test_proxyless_layers_written_out_match_the_space():
    space = SPACES.get("proxyless")
    assert [(l.height, l.in_ch, l.out_ch, l.stride) for l in space.layers] == PROXYLESS_LAYERS


def _proxyless_by_hand(lut, choices):
    """Sum of the published means for (kernel, expansion) per layer; None is a skip (0 ms)."""
    total = sum(lut[k]["mean"] for k in ("Conv-input:224x224x3-output:112x112x32",
                                         "Conv_1-input:7x7x320-output:7x7x1280", "Logits-input:7x7x1280-output:1000"))
    for (h, cin, cout, s), choice in zip(PROXYLESS_LAYERS, choices):
        if choice is not None:
            total += lut[_mb_key(h, cin, cout, s, *choice)]["mean"]
    return total


def test_pixel1_table_imports_into_proxyless():
    space = SPACES.get("proxyless")
    table = import_table(PIXEL1, "tflite", "pixel1", space, source_note="ProxylessNAS mobile_trim.yaml")
    table.check_fits(space)
    p = table.provenance
    assert (p["target"], p["device"], p["space"]) == ("tflite", "pixel1", "proxyless")
    assert p["space_fingerprint"] == space.fingerprint and p["block_set"] == list(space.blocks)
    assert p["unit"] == "ms" and p["statistic"] == "mean" and p["host"] is None
    assert p["source"] == "ProxylessNAS lookup table" and p["source_note"] == "ProxylessNAS mobile_trim.yaml"
    assert p["imported_from"] == {"file": PIXEL1.name, "sha256": hashlib.sha256(PIXEL1.read_bytes()).hexdigest()}
    # The file also times kernels 5 and 7 for the fixed first block, which proxyless does not search.
    assert [k.split("-kernel:")[1][0] for k in p["left_out"]] == ["5", "7"]
    lut = yaml.safe_load(PIXEL1.read_text())
    stem = table.rows["stem/3x224x224-32-s2"]
    assert stem.median_ms == lut["Conv-input:224x224x3-output:112x112x32"]["mean"]
    assert stem.stats == {"count": 982, "std": math.sqrt(lut["Conv-input:224x224x3-output:112x112x32"]["var"])}
    assert table.rows["identity/24x56x56-24-s1"].median_ms == 0.0
    assert table.rows["identity/24x56x56-24-s1"].layers == [2, 3, 4]
    assert len(table.rows) == 72 - 2 + 5  # file - left out + a skip row per repeated shape


@pytest.mark.parametrize("name,choices", [
    ("all k3 e3", [(3, 1)] + [(3, 3)] * 21),
    ("mixed, with skips", [(3, 1)] + [(5, 3), None, (7, 6), None, (3, 6), (5, 6), None, None, (7, 3), (3, 3),
                                      (5, 3), None, (7, 6), None, None, (3, 3), (5, 6), (7, 3), (3, 6), None, (7, 6)]),
])
def test_pixel1_prediction_is_the_sum_of_the_published_rows(name, choices):
    space = SPACES.get("proxyless")
    model = LatencyModel.from_table(import_table(PIXEL1, "tflite", "pixel1", space), space)
    blocks = tuple("identity" if c is None else f"mb_k{c[0]}_e{c[1]}" for c in choices)
    by_hand = _proxyless_by_hand(yaml.safe_load(PIXEL1.read_text()), choices)
    assert model.predict(space, blocks) == pytest.approx(by_hand, rel=1e-6)


def test_pixel1_fastest_architecture_takes_each_layers_fastest_row():
    space = SPACES.get("proxyless")
    lut = yaml.safe_load(PIXEL1.read_text())
    model = LatencyModel.from_table(import_table(PIXEL1, "tflite", "pixel1", space), space)
    fastest = [(3, 1)] + [None if cin == cout and s == 1 else (3, 3) for _, cin, cout, s in PROXYLESS_LAYERS[1:]]
    assert model.bounds()[0] == pytest.approx(_proxyless_by_hand(lut, fastest), rel=1e-6)


def test_pixel1_table_does_not_fit_fbnet():
    with pytest.raises(PipelineError, match=r"does not fit space 'fbnet': row 'Conv-input:224x224x3-output:112x112x32' "
                                            r"and \d+ more has no place in it"):
        import_table(PIXEL1, "tflite", "pixel1", SPACES.get("fbnet"))


# ---------------------------------------------------------------------------- Once-for-All, Note10
OFA_STAGES = [(112, 24, 32, 2, (0, 0)), (56, 32, 48, 2, (1, 0)), (28, 48, 96, 2, (0, 1)),
              (14, 96, 136, 1, (1, 1)), (14, 136, 192, 2, (1, 1))]


def test_note10_table_imports_into_ofa_and_predicts_the_sum_of_its_rows():
    space = SPACES.get("ofa")
    table = import_table(NOTE10, "tflite", "note10", space)
    assert table.provenance["source"] == "Once-for-All lookup table" and "left_out" not in table.provenance
    lut = yaml.safe_load(NOTE10.read_text())
    # Depth 4, 2, 3, 4, 2 with per-layer (kernel, expansion); skips take no time.
    depths = [4, 2, 3, 4, 2]
    picks = iter([(3, 4), (5, 6), (7, 3), (3, 3), (5, 4), (7, 6), (3, 6), (5, 3), (7, 4),
                  (3, 3), (5, 3), (7, 3), (3, 6), (5, 6), (7, 6)])
    blocks, by_hand = ["mb_k3_e1"], lut[_mb_key(112, 24, 24, 1, 3, 24, (0, 0))]["mean"]
    for (h, cin, cout, s, (se, hs)), depth in zip(OFA_STAGES, depths):
        for i in range(4):
            if i >= depth:
                blocks.append("identity")
                continue
            k, e = next(picks)
            c_in, size = (cin, h) if i == 0 else (cout, (h - 1) // s + 1)
            by_hand += lut[_mb_key(size, c_in, cout, s if i == 0 else 1, k, c_in * e, (se, hs))]["mean"]
            blocks.append(f"mb_k{k}_e{e}" + ("_se" if se else "") + ("_hs" if hs else ""))
    by_hand += sum(lut[k]["mean"] for k in lut if not k.startswith("expanded_conv"))  # stem, head, pool, Conv_2, logits
    model = LatencyModel.from_table(table, space)
    assert model.predict(space, tuple(blocks)) == pytest.approx(by_hand, rel=1e-6)
    # The pooling is folded into the part that reads it: Conv_2 is feature_mix here.
    mix = table.rows["feature_mix/1152x7x7-1536-s1"]
    assert mix.median_ms == pytest.approx(lut["AvgPool2D-input:7x7x1152-output:1x1x1152"]["mean"]
                                          + lut["Conv_2-input:1x1x1152-output:1x1x1536"]["mean"])


def test_note10_table_does_not_fit_proxyless():
    with pytest.raises(PipelineError, match="does not fit space 'proxyless'"):
        import_table(NOTE10, "tflite", "note10", SPACES.get("proxyless"))


# ---------------------------------------------------------------------------- bad inputs
MINI_SPACE = """\
name: mini
resolution: 16
in_channels: 3
num_classes: 10
stem_channels: 8
head_channels: 32
blocks: [mb_k3_e3, mb_k5_e6, identity]
stages: [[16, 2, 2]]
"""

MINI_ROWS = {
    "Conv-input:16x16x3-output:8x8x8": "{count: 10, mean: 0.5, var: 0.04}",
    "Conv_1-input:4x4x16-output:4x4x32": "{count: 10, mean: 0.25, std: 0.1}",
    "Logits-input:4x4x32-output:10": "{count: 10, mean: 0.125, var: 0.01}",
    "expanded_conv-input:8x8x8-output:4x4x16-expand:3-kernel:3-stride:2-idskip:0": "{count: 9, mean: 1.0, var: 0.01}",
    "expanded_conv-input:8x8x8-output:4x4x16-expand:6-kernel:5-stride:2-idskip:0": "{count: 9, mean: 2.0, var: 0.01}",
    "expanded_conv-input:4x4x16-output:4x4x16-expand:3-kernel:3-stride:1-idskip:1": "{count: 9, mean: 3.0, var: 0.01}",
    "expanded_conv-input:4x4x16-output:4x4x16-expand:6-kernel:5-stride:1-idskip:1": "{count: 9, mean: 4.0, var: 0.01}",
}
K3_REPEAT = "expanded_conv-input:4x4x16-output:4x4x16-expand:3-kernel:3-stride:1-idskip:1"


@pytest.fixture
def mini(tmp_path):
    f = tmp_path / "mini.yaml"
    f.write_text(MINI_SPACE)
    return resolve_space(str(f))


def _lut(tmp_path, rows=MINI_ROWS, extra="", name="lut.yaml"):
    p = tmp_path / name
    p.write_text("".join(f"{k}: {v}\n" for k, v in rows.items()) + extra)
    return p


def test_small_table_imports_and_predicts_by_hand(tmp_path, mini):
    table = import_table(_lut(tmp_path), "tflite", "phone", mini)
    model = LatencyModel.from_table(table, mini)
    assert model.predict(mini, ("mb_k5_e6", "identity")) == pytest.approx(0.5 + 0.25 + 0.125 + 2.0)
    assert model.predict(mini, ("mb_k3_e3", "mb_k3_e3")) == pytest.approx(0.5 + 0.25 + 0.125 + 1.0 + 3.0)
    assert table.rows["identity/16x4x4-16-s1"].stats["note"].startswith("skipped layer")


def _columns(grid):
    """Each printed value of a right-aligned grid, by the header it sits under: {(row, column): text}."""
    header, *lines = grid.splitlines()
    ends = {m.end(): m.group() for m in re.finditer(r"\S+(?: \S+)*", header)}
    cells = {}
    for line in lines:
        name = line.split()[0]
        for m in re.finditer(r"\S+", line[len(name):]):
            end = m.end() + len(name)
            if end in ends and m.start() > 0:
                cells[(name, ends[end])] = m.group()
    return cells


def test_import_printout_keeps_the_fixed_parts_out_of_the_block_columns(tmp_path, mini):
    from pipeline.render import latency_grid

    cells = _columns(latency_grid(import_table(_lut(tmp_path), "tflite", "phone", mini), mini))
    assert {k: v for k, v in cells.items() if k[0] in ("stem", "head_conv", "classifier")} == {
        ("stem", "fixed part"): "0.5000", ("head_conv", "fixed part"): "0.2500", ("classifier", "fixed part"): "0.1250"}
    assert {k: v for k, v in cells.items() if k[0] in ("0", "1")} == {
        ("0", "mb_k3_e3"): "1.0000", ("0", "mb_k5_e6"): "2.0000", ("0", "identity"): "-",
        ("1", "mb_k3_e3"): "3.0000", ("1", "mb_k5_e6"): "4.0000", ("1", "identity"): "0.0000"}


def test_saved_import_loads_back_as_a_table(tmp_path, mini):
    table = import_table(_lut(tmp_path), "tflite", "phone", mini)
    table.save(tmp_path / "t.json")
    back = load_table(tmp_path / "t.json")
    back.check_fits(mini)
    assert back.provenance == json.loads(json.dumps(table.provenance))


def _without(key):
    return {k: v for k, v in MINI_ROWS.items() if k != key}


@pytest.mark.parametrize("rows,extra,match", [
    # a row the space has no place for (another shape): the table is for another space
    (MINI_ROWS, "expanded_conv-input:2x2x16-output:2x2x16-expand:3-kernel:3-stride:1-idskip:1: {mean: 1.0}\n",
     "does not fit space 'mini': row 'expanded_conv-input:2x2x16.*' has no place in it"),
    (MINI_ROWS, "Conv_2-input:1x1x32-output:1x1x64: {mean: 1.0}\n", "does not fit space 'mini': row 'Conv_2-"),
    (_without(K3_REPEAT), "", r"lacks row\(s\) space 'mini' needs: 'mb_k3_e3/16x4x4-16-s1'"),
    (_without("Logits-input:4x4x32-output:10"), "", "lacks row.*'classifier/32x4x4-10-s1'"),
    (MINI_ROWS, f"{K3_REPEAT}: {{mean: 3.0}}\n", f"key '{K3_REPEAT}' appears twice \\(line 8\\); keep one"),
    ({**MINI_ROWS, K3_REPEAT: "{mean: 3.0, mean: 2.0}"}, "", "key 'mean' appears twice"),
    (MINI_ROWS, "DepthConv-input:4x4x16-output:4x4x16: {mean: 1.0}\n", "unknown kind 'DepthConv'"),
    ({**MINI_ROWS, K3_REPEAT: "{count: 9, var: 0.01}"}, "", f"row '{K3_REPEAT}': mean is missing: it is required"),
    ({**MINI_ROWS, K3_REPEAT: "3.0"}, "", r"' = 3\.0: expected a mapping"),
    ({**MINI_ROWS, K3_REPEAT: "{mean: -3.0}"}, "", r"mean = -3\.0: expected a latency in ms from 0 to below 1,000,000"),
    ({**MINI_ROWS, K3_REPEAT: "{mean: .nan}"}, "", "mean = nan: expected a latency in ms from 0"),
    ({**MINI_ROWS, K3_REPEAT: "{mean: 3.0, var: -1}"}, "", "var = -1: expected a variance in ms"),
    (MINI_ROWS, "unit: us\n", "gives latencies in 'us'; only milliseconds"),
    ({**MINI_ROWS, K3_REPEAT: "{mean: 3.0, unit: s}"}, "", "gives latencies in 's'"),
    (_without(K3_REPEAT), K3_REPEAT.replace("idskip:1", "idskip:0") + ": {mean: 3.0}\n", "is inconsistent"),
    (MINI_ROWS, "Conv-input:16x16x3: {mean: 1.0}\n", "lacks field 'output'"),
    (MINI_ROWS, "Logits-input:4x4-output:10: {mean: 1.0}\n", r"input = \[4, 4\]: expected HxWxC or N"),
    (MINI_ROWS, "AvgPool2D-input:4x4x64-output:1x1x64: {mean: 0.1}\n", "a pooling no Conv_2/Logits key reads"),
    (MINI_ROWS, "expanded_conv-input:8-output:4x4x16-expand:3-kernel:3-stride:2-idskip:0: {mean: 1.0}\n",
     "has size '8' where HxWxC is needed"),
    (MINI_ROWS, K3_REPEAT.replace("expand:3", "expand:20") + "-se:0-hs:0: {mean: 3.0}\n",
     "expand:20 middle channels, not a multiple of its 16 inputs"),
    (MINI_ROWS, K3_REPEAT.replace("kernel:3", "kernel:three") + ": {mean: 3.0}\n", "has kernel:three, not an integer"),
    # two spellings of one block: ProxylessNAS's ratio and Once-for-All's middle channels
    (MINI_ROWS, K3_REPEAT.replace("expand:3", "expand:48") + "-se:0-hs:0: {mean: 3.0}\n",
     "are both row 'mb_k3_e3/16x4x4-16-s1'"),
])
def test_bad_lookup_tables_are_refused(tmp_path, mini, rows, extra, match):
    with pytest.raises(PipelineError, match=match):
        import_table(_lut(tmp_path, rows, extra), "tflite", "phone", mini)


def test_extra_blocks_at_the_spaces_shapes_are_left_out_and_listed(tmp_path, mini):
    k7 = "expanded_conv-input:8x8x8-output:4x4x16-expand:3-kernel:7-stride:2-idskip:0"
    table = import_table(_lut(tmp_path, extra=f"{k7}: {{mean: 9.0}}\n"), "tflite", "phone", mini)
    assert table.provenance["left_out"] == [k7]
    assert not any(r.block == "mb_k7_e3" for r in table.rows.values())


@pytest.mark.parametrize("text", ["colour: red\n", "- 1\n- 2\n", '{"format": "other", "rows": []}', "key: [unclosed\n"])
def test_unknown_formats_name_the_accepted_ones(tmp_path, mini, text):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(PipelineError, match="accepted formats: this tool's latency table .* ProxylessNAS/Once-for-All"):
        import_table(p, "tflite", "phone", mini)


def test_missing_file_is_named(tmp_path, mini):
    with pytest.raises(PipelineError, match="'.*nope.yaml' does not exist"):
        import_table(tmp_path / "nope.yaml", "tflite", "phone", mini)


# ---------------------------------------------------------------------------- own format
def test_own_table_round_trips_and_is_rebound(tmp_path, micro_space, micro_table):
    micro_table.provenance.update(host={"cpu": "phone cpu", "cores": 8}, space="micro")
    micro_table.save(tmp_path / "t.json")
    table = import_table(tmp_path / "t.json", "tflite", "pixel7", micro_space)
    assert {k: (r.median_ms, r.shape, r.stats) for k, r in table.rows.items()} == \
           {k: (r.median_ms, r.shape, r.stats) for k, r in micro_table.rows.items()}
    p = table.provenance
    assert (p["target"], p["device"], p["space_fingerprint"]) == ("tflite", "pixel7", micro_space.fingerprint)
    assert p["measured_as"] == {"target": "desktop", "device": "host", "space": "micro"}
    assert p["host"] == {"cpu": "phone cpu", "cores": 8} and p["statistic"] == "median"
    assert LatencyModel.from_table(table, micro_space).predict(micro_space, ("k3_e1", "k3_e6", "skip")) == \
           LatencyModel.from_table(micro_table, micro_space).predict(micro_space, ("k3_e1", "k3_e6", "skip"))


def test_own_table_for_another_space_is_refused(tmp_path, micro_space, micro_table):
    micro_table.save(tmp_path / "t.json")
    with pytest.raises(PipelineError, match="does not fit space 'tiny': row '.*' and 14 more has no place in it"):
        import_table(tmp_path / "t.json", "tflite", "phone", resolve_space("tiny"))


def test_own_table_missing_rows_is_refused(tmp_path, micro_space):
    table = make_table(micro_space)
    table.rows.pop("k5_e3/16x4x4-16-s1")
    table.save(tmp_path / "t.json")
    with pytest.raises(PipelineError, match=r"lacks row\(s\) space 'micro' needs: 'k5_e3/16x4x4-16-s1'"):
        import_table(tmp_path / "t.json", "tflite", "phone", micro_space)


def test_own_table_in_another_unit_is_refused(tmp_path, micro_space, micro_table):
    micro_table.provenance["unit"] = "us"
    micro_table.save(tmp_path / "t.json")
    with pytest.raises(PipelineError, match="gives latencies in 'us'"):
        import_table(tmp_path / "t.json", "tflite", "phone", micro_space)


def test_truncated_own_table_is_refused(tmp_path, micro_table):
    p = tmp_path / "t.json"
    p.write_text(micro_table.to_json()[:-40])
    with pytest.raises(PipelineError, match="accepted formats"):
        import_table(p, "tflite", "phone", SPACES.get("tiny"))
