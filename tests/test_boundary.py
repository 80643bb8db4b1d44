"""Identity rows priced at the runtime's edge cost, from the no-op layers benchmark times."""

from __future__ import annotations

import pytest

from benchmarks.boundary import edge_ms, is_identity, layer_latency, noop_layer, noop_rows
from benchmarks.predict import LatencyModel
from benchmarks.table import Row
from blocks.space import LayerShape
from tests.conftest import make_table


def test_identity_is_told_by_what_a_block_computes() -> None:
    kept, down = LayerShape(8, 8, 1, 8, 8), LayerShape(8, 16, 2, 8, 8)
    assert is_identity("skip", kept) and not is_identity("skip", down)  # a 1x1 conv where the shape changes
    assert not is_identity("k3_e1", kept) and is_identity("identity", kept)  # ProxylessNAS's skip too
    assert not is_identity("k3_e1_g2", kept)


def test_noop_layers_compute_the_identity() -> None:
    import torch

    shape = LayerShape(6, 6, 1, 5, 5)
    x = torch.randn(1, 6, 5, 5)
    for convs in (1, 2):
        assert torch.equal(noop_layer(shape, convs)(x), x)
    assert edge_ms(0.5, 0.7) == pytest.approx(0.3)  # one conv costs 0.2; zero convs 0.3


def test_noop_rows_sit_where_a_candidate_is_the_identity(micro_space) -> None:
    rows = noop_rows(micro_space)
    assert [(n, s.key) for n, s in rows] == [("noop_1", "8x8x8-8-s1"), ("noop_2", "8x8x8-8-s1"),
                                              ("noop_1", "16x4x4-16-s1"), ("noop_2", "16x4x4-16-s1")]


def test_an_identity_is_predicted_at_the_edge_cost_when_the_table_has_it(micro_space) -> None:
    table = make_table(micro_space)  # skip rows 0.1 ms
    shape = micro_space.layers[0]
    plain = LatencyModel.from_table(table, micro_space, calibrated=False)
    assert layer_latency(table, "skip", shape) == pytest.approx(0.1)  # no no-op rows: the row itself
    for name, ms in (("noop_1", 0.5), ("noop_2", 0.7)):
        for s in {micro_space.layers[0], micro_space.layers[2]}:
            table.add(Row(name, s, "ok", ms, {"count": 3}))
    assert layer_latency(table, "skip", shape) == pytest.approx(0.3)
    assert layer_latency(table, "k3_e1", shape) == pytest.approx(1.0)  # other blocks keep their rows
    assert layer_latency(table, "skip", micro_space.layers[1]) == pytest.approx(0.1)  # a 1x1 conv there
    adjusted = LatencyModel.from_table(table, micro_space, calibrated=False)
    skips = ("skip", "skip", "skip")
    assert adjusted.predict(micro_space, skips) == pytest.approx(plain.predict(micro_space, skips) + 2 * 0.2)
    table.add(Row("noop_2", shape, "ok", 1.5, {"count": 3}))  # edge estimate below the row: keep the row
    assert layer_latency(table, "skip", shape) == pytest.approx(0.1)


def test_noop_rows_are_measured_only_where_the_format_converts_layout_at_its_edges(micro_space) -> None:
    from benchmarks.harness import rows_to_measure
    from benchmarks.table import required_rows
    from benchmarks.targets import TARGETS

    needed = len(required_rows(micro_space))
    counts = {name: len(rows_to_measure(micro_space, TARGETS.get(name).make_exporter()))
              for name in ("desktop", "android", "android-executorch", "ios", "ios-executorch")}
    assert counts == {"desktop": needed, "android": needed + 4, "android-executorch": needed + 4,
                      "ios": needed, "ios-executorch": needed}


@pytest.mark.slow
def test_litert_transposes_at_both_edges_of_a_noop_layer(tmp_path) -> None:
    """Why LiteRT gets no-op rows: its converter wraps even a do-nothing layer in transposes."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks.harness import export_row
    from benchmarks.targets import TARGETS

    target = TARGETS.get("android")
    shape = LayerShape(8, 8, 1, 8, 8)
    artifact = export_row(target.make_exporter(), "noop_1", shape, tmp_path)
    ops = [op["op_name"] for op in Interpreter(model_path=str(artifact.path))._get_ops_details()]
    assert ops[0] == ops[-1] == "TRANSPOSE" and "DEPTHWISE_CONV_2D" in ops
    x = torch.randn(1, 8, 8, 8)
    (y,) = target.make_runner(1).load(artifact)([x.numpy()])
    assert torch.allclose(torch.from_numpy(y), x, atol=1e-6)
