"""`pipeline search --sweep`: points, Pareto front, files, resuming, bad input."""

import json

import pytest

from benchmarks.predict import LatencyModel
from pipeline.training import sweep as sweep_mod
from pipeline.training.data import load_data
from core.errors import PipelineError
from pipeline.training.sweep import SweepPoint, mark_pareto, parse_sweep, sweep
from pipeline.training.loop import TrainConfig


def test_parse_sweep():
    assert parse_sweep("lam=0.01,0.1,1").values == (0.01, 0.1, 1.0)
    assert parse_sweep("latency_target=3,4").field == "latency_target"
    for bad, why in [("lam", "sweeps lam or latency-target"), ("epochs=1,2", "sweeps lam or latency-target"),
                     ("lam=a,b", "must be numbers"), ("lam=1", "at least two different values")]:
        with pytest.raises(PipelineError, match=why):
            parse_sweep(bad)


def test_pareto_front_keeps_exactly_the_undominated_points():
    pts = [SweepPoint("search", "a", (), 1.0, 0.5), SweepPoint("search", "b", (), 2.0, 0.7),
           SweepPoint("random", "c", (), 2.5, 0.6), SweepPoint("random", "d", (), 3.0, 0.9),
           SweepPoint("random", "e", (), 1.0, 0.4)]
    assert [p.label for p in mark_pareto(pts) if p.pareto] == ["a", "b", "d"]


def test_sweep_writes_points_front_and_plot_and_resumes_without_retraining(micro_space, micro_table, tmp_path,
                                                                           monkeypatch):
    latency = LatencyModel.from_table(micro_table, micro_space)
    splits = load_data("digits", 16, 1)
    # softmax: α follows the loss without Gumbel noise, so λ=5 reaches the fastest network in 1 Θ epoch
    base = {"epochs": 2, "warmup_epochs": 1, "loss": "add", "theta_lr": 0.2, "mixing": "softmax"}
    spec = parse_sweep("lam=0,5")
    trained = []
    real = sweep_mod._train
    monkeypatch.setattr(sweep_mod, "_train", lambda *a: trained.append(a[1]) or real(*a))
    r = sweep(micro_space, latency, splits, base, spec, TrainConfig(epochs=1), 3, tmp_path, progress=False)
    assert len(trained) == 5 and [p.kind for p in r.points] == ["search"] * 2 + ["random"] * 3
    by = {p.label: p for p in r.points}
    assert by["lam=5"].predicted_ms == pytest.approx(1.8)  # λ=5 derives the fastest network the table allows
    assert by["lam=0"].predicted_ms > by["lam=5"].predicted_ms
    assert any(p.pareto for p in r.points) and all(0 <= p.accuracy <= 1 for p in r.points)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 6
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert sorted(saved["pareto_front"]) == sorted(p.label for p in r.front)
    assert json.loads((tmp_path / "lam=5.json").read_text())["predicted_latency_ms"] == pytest.approx(1.8)

    again = sweep(micro_space, latency, splits, base, spec, TrainConfig(epochs=1), 3, tmp_path, progress=False)
    assert len(trained) == 5  # every point came from sweep.json
    assert [(p.label, p.accuracy) for p in again.points] == [(p.label, p.accuracy) for p in r.points]
    sweep(micro_space, latency, splits, base, spec, TrainConfig(epochs=2), 3, tmp_path, progress=False)
    assert len(trained) == 10  # another training recipe: nothing reused


def test_sweep_points_are_not_reused_across_input_resolutions(micro_space, micro_table):
    latency = LatencyModel.from_table(micro_table, micro_space)
    ids = [sweep_mod.sweep_identity(micro_space, latency, load_data("digits", r, 1), TrainConfig()) for r in (16, 16, 24)]
    assert ids[0] == ids[1] != ids[2]


def test_fresh_networks_start_from_the_seed_whatever_ran_before(micro_space):
    import torch
    from pipeline.training.loop import fresh_network
    blocks = ("k3_e1", "skip", "k5_e3")
    a = fresh_network(micro_space, blocks, 10, seed=3).state_dict()
    torch.randn(1000)  # whatever else used the global generator in between
    b = fresh_network(micro_space, blocks, 10, seed=3).state_dict()
    c = fresh_network(micro_space, blocks, 10, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
