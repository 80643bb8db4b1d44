"""The search loop: recipes, latency targets, checkpoints, resume, Ctrl-C, NaN, processes."""

import itertools
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from benchmarks.predict import LatencyModel
from pipeline.training.data import load_data
from core.errors import PipelineError
from pipeline.training.search import SearchConfig, SearchStopped, derive_within, run_search
from tests.conftest import make_table


@pytest.fixture(scope="module")
def splits():
    return load_data("digits", 16, 1)


@pytest.fixture
def latency(micro_space, micro_table):
    return LatencyModel.from_table(micro_table, micro_space)


def test_recipes_fill_what_the_config_leaves_unset():
    default = SearchConfig()  # gumbel: W alone for half the epochs, then Θ with Adam at 0.1
    assert (default.mixing, default.warmup_epochs, default.theta_lr, default.loss) == ("gumbel", 5, 0.1, "mul")
    assert default.temperature_decay == 0.3
    soft = SearchConfig(mixing="softmax")
    assert (soft.warmup_epochs, soft.theta_lr) == (2, 0.05)
    assert SearchConfig(mixing="gumbel", epochs=1).warmup_epochs == 0
    assert SearchConfig(mixing="gumbel", theta_lr=0.2, warmup_epochs=3).theta_lr == 0.2
    with pytest.raises(PipelineError, match="learning rates > 0"):
        SearchConfig(theta_lr=0.0)
    t = SearchConfig(latency_target=5.0)
    assert (t.loss, t.lam) == ("target", 1.0)
    with pytest.raises(PipelineError, match="drop --loss add"):
        SearchConfig(latency_target=5.0, loss="add")
    with pytest.raises(PipelineError, match="unknown mixing strategy 'dropout'; valid names: softmax, gumbel, sampled"):
        SearchConfig(mixing="dropout")
    for loss in ("mul", None):  # None resolves to mul: λ would be silently ignored
        with pytest.raises(PipelineError, match=r"--lam does not apply to --loss mul .* --loss add or --loss log"):
            SearchConfig(loss=loss, lam=0.5)
    with pytest.raises(PipelineError, match="--paths must be at least 2"):
        SearchConfig(mixing="sampled", paths=1)
    for kw in ({}, {"loss": "add"}, {"mixing": "gumbel"}, {"latency_target": 5.0}):  # a saved config loads back
        c = SearchConfig(**kw)
        assert SearchConfig(**c.to_dict()) == c


def _brute_force(space, alphas, latency, target):
    best = None
    for choice in itertools.product(*(range(len(space.candidates(i))) for i in range(len(space.layers)))):
        blocks = tuple(space.candidates(i)[j] for i, j in enumerate(choice))
        if latency.predict(space, blocks) > target:
            continue
        score = sum(math.log(float(a[j])) for a, j in zip(alphas, choice))
        if best is None or score > best[0] + 1e-12:
            best = (score, blocks)
    return best[1]


@pytest.mark.parametrize("target", [1.8, 2.5, 4.0, 6.1, 9.0])
def test_derive_within_finds_the_most_likely_architecture_that_meets_the_target(micro_space, latency, target):
    g = torch.Generator().manual_seed(int(target * 10))
    alphas = [torch.softmax(torch.randn(4, generator=g) * 2, -1) for _ in micro_space.layers]
    blocks = derive_within(micro_space, alphas, latency, target)
    assert latency.predict(micro_space, blocks) <= target + 1e-9
    assert blocks == _brute_force(micro_space, alphas, latency, target)


def test_derive_within_refuses_alphas_that_are_not_numbers(micro_space, latency):
    alphas = [torch.full((4,), 0.25) for _ in micro_space.layers]
    alphas[1][2] = float("nan")
    with pytest.raises(PipelineError, match="α are not finite numbers"):
        derive_within(micro_space, alphas, latency, 5.0)


def test_derive_within_is_exact_on_many_random_tables(micro_space):
    # The greedy Lagrangian it replaced missed the optimum in about 4% of such cases.
    n = [len(micro_space.candidates(i)) for i in range(len(micro_space.layers))]
    g = torch.Generator().manual_seed(0)
    for case in range(400):
        per = tuple(torch.rand(k, generator=g, dtype=torch.float64) * 4 for k in n)
        model = LatencyModel(per, 0.5)
        logp = [torch.randn(k, generator=g, dtype=torch.float64) * 2 for k in n]
        alphas = [torch.softmax(lp, -1) for lp in logp]
        lo, hi = (0.5 + sum(float(f(t)) for t in per) for f in (torch.min, torch.max))
        target = lo + float(torch.rand(1, generator=g)) * (hi - lo)
        best = max((sum(float(torch.log(a[j])) for a, j in zip(alphas, c)), c)
                   for c in itertools.product(*(range(k) for k in n))
                   if 0.5 + sum(float(t[j]) for t, j in zip(per, c)) <= target)
        blocks = derive_within(micro_space, alphas, model, target)
        got = [micro_space.candidates(i).index(b) for i, b in enumerate(blocks)]
        assert 0.5 + sum(float(t[j]) for t, j in zip(per, got)) <= target + 1e-9, case
        assert sum(float(torch.log(a[j])) for a, j in zip(alphas, got)) == pytest.approx(best[0], abs=1e-9), case


def test_latency_target_search_meets_its_target(micro_space, latency, splits):
    fastest, slowest = latency.bounds()  # 1.8 and 10.5 ms on the hand-made table
    target = 4.0
    cfg = SearchConfig(epochs=3, warmup_epochs=1, latency_target=target, theta_lr=0.1)
    r = run_search(micro_space, latency, splits, cfg, progress=False)
    assert latency.predict(micro_space, r.blocks) <= target
    assert r.history[-1]["expected_latency_ms"] < (fastest + slowest) / 2  # Θ was pulled towards the target


def test_latency_target_below_the_fastest_architecture_is_refused(micro_space, latency, splits):
    with pytest.raises(PipelineError, match=r"below the fastest architecture .* \(1\.8 ms\); ask for at least 1\.8 ms"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=2, latency_target=1.0), progress=False)


def _final(r):
    return [l.theta.detach().clone() for l in r.supernet.layers], r.supernet.state_dict()


def _same(a, b):
    (ta, sa), (tb, sb) = a, b
    assert all(torch.equal(x, y) for x, y in zip(ta, tb))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("mixing", ["softmax", "gumbel", "sampled"])
def test_resume_after_ctrl_c_equals_an_uninterrupted_run(micro_space, latency, splits, tmp_path, monkeypatch, mixing):
    cfg = SearchConfig(epochs=3, warmup_epochs=1, mixing=mixing, loss="add", lam=0.5)
    whole = run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=tmp_path / "a.pt")

    # Ctrl-C (a real SIGINT) in the middle of epoch 2's Θ pass
    from pipeline.training import search as search_mod
    original = search_mod._Searcher.theta_step
    calls = []

    def step(self, x, y, where):
        calls.append(where)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, y, where)

    monkeypatch.setattr(search_mod._Searcher, "theta_step", step)
    ck = tmp_path / "b.pt"
    with pytest.raises(SearchStopped, match=r"stopped at epoch 2, Θ step 3: progress saved to .*b\.pt.*--resume"):
        run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=ck)
    pos = torch.load(ck, weights_only=True)["position"]
    assert (pos["epoch"], pos["phase"], pos["batch"]) == (1, "theta", 2)  # steps 1 and 2 done; step 3 saw the stop before its update
    monkeypatch.setattr(search_mod._Searcher, "theta_step", original)
    resumed = run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=ck, resume=True)
    _same(_final(whole), _final(resumed))
    assert resumed.blocks == whole.blocks and resumed.history == whole.history


def test_a_second_ctrl_c_interrupts_at_once_and_keeps_the_last_epoch_checkpoint(micro_space, latency, splits,
                                                                              tmp_path, monkeypatch):
    from pipeline.training import search as search_mod
    original = search_mod._Searcher.w_step
    calls = []

    def step(self, x, y, where):
        calls.append(where)
        if len(calls) == 22:  # epoch 2, W step 4: two SIGINTs inside one step
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, y, where)

    monkeypatch.setattr(search_mod._Searcher, "w_step", step)
    ck = tmp_path / "k.pt"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs as a background job
    with pytest.raises(SearchStopped, match=r"second Ctrl-C: the checkpoint after epoch 1 is kept at .*k\.pt.*--resume"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=3, warmup_epochs=1), progress=False, checkpoint=ck)
    assert torch.load(ck, weights_only=True)["position"]["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


def test_a_second_ctrl_c_while_saving_still_ends_with_one_line(micro_space, latency, splits, tmp_path, monkeypatch):
    from pipeline.training import search as search_mod
    real, calls = search_mod.save_checkpoint, []

    def save(*a):
        calls.append(1)
        if len(calls) == 2:  # the save after epoch 2 is interrupted; the file from epoch 1 stands
            raise KeyboardInterrupt
        real(*a)

    monkeypatch.setattr(search_mod, "save_checkpoint", save)
    ck = tmp_path / "s.pt"
    with pytest.raises(SearchStopped, match=r"second Ctrl-C: the checkpoint after epoch 1 is kept at .*s\.pt"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=3, warmup_epochs=1), progress=False, checkpoint=ck)
    assert torch.load(ck, weights_only=True)["position"]["epoch"] == 1


def test_same_seed_same_result_and_another_seed_differs(micro_space, latency, splits):
    cfg = SearchConfig(epochs=2, warmup_epochs=1, mixing="gumbel", loss="add", lam=0.5)
    a = run_search(micro_space, latency, splits, cfg, progress=False)
    b = run_search(micro_space, latency, splits, cfg, progress=False)
    _same(_final(a), _final(b))
    c = run_search(micro_space, latency, splits, SearchConfig(epochs=2, warmup_epochs=1, mixing="gumbel", seed=1),
                   progress=False)
    assert not torch.equal(_final(a)[0][0], _final(c)[0][0])


def test_checkpoint_of_another_search_is_refused_naming_the_difference(micro_space, latency, splits, tmp_path):
    ck = tmp_path / "c.pt"
    cfg = SearchConfig(epochs=1, warmup_epochs=0, loss="add", lam=0.5)
    run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=ck)
    with pytest.raises(PipelineError, match=r"belongs to another search \(config\.lam 0\.5 there, 0\.7 now\)"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=1, warmup_epochs=0, loss="add", lam=0.7),
                   progress=False, checkpoint=ck, resume=True)
    other_table = LatencyModel.from_table(make_table(micro_space, lambda b, s: 1.0), micro_space)
    with pytest.raises(PipelineError, match=r"belongs to another search \(latency "):
        run_search(micro_space, other_table, splits, cfg, progress=False, checkpoint=ck, resume=True)
    data = torch.load(ck, weights_only=True)
    data["tool_version"] = "0.0.1"
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(PipelineError, match=r"written by pipeline 0\.0\.1 .* search again without --resume"):
        run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=tmp_path / "old.pt", resume=True)
    (tmp_path / "bad.pt").write_bytes(ck.read_bytes()[:200])
    with pytest.raises(PipelineError, match="is corrupt or not a checkpoint"):
        run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=tmp_path / "bad.pt", resume=True)
    with pytest.raises(PipelineError, match="no checkpoint at"):
        run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=tmp_path / "none.pt", resume=True)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(micro_space, latency, splits, tmp_path,
                                                                           monkeypatch):
    from pipeline.training import search as search_mod
    real = search_mod.F.cross_entropy
    calls = []

    def ce(out, y):
        calls.append(1)
        loss = real(out, y)
        return loss * float("nan") if len(calls) == 30 else loss  # epoch 2's 12th W step (W has 18 steps an epoch)

    monkeypatch.setattr(search_mod.F, "cross_entropy", ce)
    ck = tmp_path / "n.pt"
    with pytest.raises(PipelineError, match=r"loss is nan at epoch 2, W step 12; the checkpoint after epoch 1, "
                                            r"the last good one, is kept at .*n\.pt"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=3, warmup_epochs=1), progress=False, checkpoint=ck)
    saved = torch.load(ck, weights_only=True)
    assert saved["position"]["epoch"] == 1 and saved["position"]["phase"] == "W"
    assert all(torch.isfinite(v).all() for v in saved["net"].values() if v.is_floating_point())
    # Again, now failing in epoch 1: the file on disk is the earlier search's, so none is claimed as kept.
    calls[:] = [1] * 18
    with pytest.raises(PipelineError, match=r"loss is nan at epoch 1, W step 12; lower"):
        run_search(micro_space, latency, splits, SearchConfig(epochs=3, warmup_epochs=1), progress=False, checkpoint=ck)


# ------------------------------------------------------------------ as users run it
@pytest.fixture
def cli_ws(tmp_path, micro_space, micro_space_file, micro_table):
    table = tmp_path / "table.json"
    micro_table.save(table)
    return ["--space", str(micro_space_file), "--table", str(table), "--out", str(tmp_path / "ws")]


def _invoke(*args):
    from click.testing import CliRunner
    from pipeline.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(r):
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_latency_target_reports_whether_it_is_met(cli_ws):
    r = _invoke("search", *cli_ws, "-q", "--epochs", 2, "--latency-target", 3.0)
    assert r.exit_code == 0, r.output
    assert "meets the target 3 ms" in r.output  # -q: the one summary line
    low = _invoke("search", *cli_ws, "-q", "--epochs", 2, "--latency-target", 0.5)
    assert "latency target 0.5 ms is below the fastest architecture of space 'micro' under this table (1.8 ms)" \
        in _one_line_error(low)


def test_cli_devices_bad_input(cli_ws):
    if not torch.cuda.is_available():
        assert "--compute cuda: no CUDA GPU is available here" in _one_line_error(
            _invoke("search", *cli_ws, "--compute", "cuda"))
        assert "--compute cuda: no CUDA GPU" in _one_line_error(_invoke("train", "--compute", "cuda"))
    assert "unknown mixing strategy 'fast'" in _one_line_error(_invoke("search", *cli_ws, "--mixing", "fast"))
    assert "--compute cuda:x: not a compute device" in _one_line_error(_invoke("search", *cli_ws, "--compute", "cuda:x"))
    assert "--compute cuda:-1: not a compute device" in _one_line_error(
        _invoke("search", *cli_ws, "--compute", "cuda:-1", "--sweep", "lam=1,2", "--loss", "add"))
    assert "--compute pixel1: not a compute device" in _one_line_error(_invoke("run", "--compute", "pixel1"))
    # --device names a table's device only: a compute device there points to --compute
    ws = cli_ws[cli_ws.index("--out") + 1]
    for command in ("search", "train", "run"):
        assert "not a compute device; to train on it, use --compute cuda" in _one_line_error(
            _invoke(command, "--out", ws, "--device", "cuda"))
    assert "--device cpu: --device names the device a latency table belongs to" in _one_line_error(
        _invoke("benchmark", "--out", ws, "--device", "cpu"))
    assert "No such option '--compute'" in _invoke("export", "--out", ws, "--compute", "cpu").stderr
    msg = _one_line_error(_invoke("search", "--out", ws, "--device", "pixel9"))
    assert "through an agent there ('pipeline benchmark --target desktop --space tiny --device pixel9 --remote URL" in msg
    assert "--device pixel9' writes its blocks to time there), or bring in a table" in msg


def test_cli_steps_that_must_run_once_refuse_torchrun(cli_ws, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "pipeline run runs on one process; use torchrun only for 'pipeline search'" in _one_line_error(
        _invoke("run", "--out", cli_ws[-1]))  # refused before anything is benchmarked
    assert "pipeline search --sweep runs on one process" in _one_line_error(
        _invoke("search", *cli_ws, "--sweep", "lam=1,2", "--loss", "add"))


def test_cli_resume_refuses_changed_options_and_continues_with_same(cli_ws, tmp_path):
    assert _invoke("search", *cli_ws, "-q", "--epochs", 2, "--mixing", "gumbel").exit_code == 0
    ck = tmp_path / "ws/search/micro/desktop/host/architecture.checkpoint.pt"
    assert ck.is_file()
    err = _one_line_error(_invoke("search", *cli_ws, "-q", "--epochs", 3, "--mixing", "gumbel", "--resume"))
    assert "belongs to another search (config.epochs 2 there, 3 now" in err
    again = _invoke("search", *cli_ws, "-q", "--epochs", 2, "--mixing", "gumbel", "--resume")
    assert again.exit_code == 0, again.output  # already finished: derives again from the checkpoint


@pytest.mark.slow
def test_torchrun_two_cpu_processes_search_with_ddp_and_only_rank_0_writes(cli_ws, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "pipeline.cli",
           "search", *cli_ws, "-q", "--epochs", 2, "--mixing", "sampled"]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("\n") == 1 and p.stdout.startswith("architecture ")  # -q: one line; rank 1 prints nothing
    out = tmp_path / "ws/search/micro/desktop/host"
    arch = __import__("json").loads((out / "architecture.json").read_text())
    assert len(arch["blocks"]) == 3 and arch["search"]["mixing"] == "sampled"
    ck = torch.load(out / "architecture.checkpoint.pt", weights_only=True)
    assert ck["identity"]["processes"] == 2 and ck["position"]["epoch"] == 2
    assert sorted(f.name for f in out.iterdir()) == ["architecture.checkpoint.pt", "architecture.json",
                                                     "architecture.supernet.pt"]


def test_a_killed_search_resumes_from_its_last_epoch_to_the_same_result(micro_space, latency, splits, tmp_path,
                                                                         monkeypatch):
    cfg = SearchConfig(epochs=3, warmup_epochs=1, mixing="gumbel", loss="add", lam=0.5)
    whole = run_search(micro_space, latency, splits, cfg, progress=False)
    from pipeline.training import search as search_mod
    original = search_mod._Searcher.w_step
    steps = []

    def dies(self, x, y, where):  # the process is killed: nothing is saved on the way out
        steps.append(where)
        if len(steps) == 25:
            raise SystemExit(137)
        return original(self, x, y, where)

    monkeypatch.setattr(search_mod._Searcher, "w_step", dies)
    ck = tmp_path / "k.pt"
    with pytest.raises(SystemExit):
        run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=ck)
    assert torch.load(ck, weights_only=True)["position"]["epoch"] == 1  # written after epoch 1
    monkeypatch.setattr(search_mod._Searcher, "w_step", original)
    resumed = run_search(micro_space, latency, splits, cfg, progress=False, checkpoint=ck, resume=True)
    _same(_final(whole), _final(resumed))


# ------------------------------------------------------------------ what a search writes and prints
def _report(space, blocks, alpha, tmp_path):
    from blocks.architecture import Architecture
    from pipeline.stages.search import SearchReport

    info = {"alpha": alpha, "predicted_latency_ms": 3.0, "supernet_test_accuracy": 0.5,
            "latency": {"predictor": "table sum", "space_fastest_ms": 1.8, "space_slowest_ms": 10.5},
            "table": {"target": "desktop", "device": "host"},
            "latency_target": {"target_ms": 3.5, "met": True, "argmax_latency_ms": 6.0, "layers_changed_to_meet_it": [0, 1]}}
    return SearchReport(Architecture(space, blocks, info), tmp_path / "architecture.json", None, 3.0, 0.25)


def test_runner_up_under_a_latency_target_is_the_best_block_other_than_the_chosen_one(micro_space, tmp_path):
    from pipeline.render import search_text

    alpha = [{"k3_e1": 0.5, "k3_e6": 0.3, "k5_e3": 0.15, "skip": 0.05},  # chose the second most likely
             {"k3_e1": 0.5, "k3_e6": 0.3, "k5_e3": 0.15, "skip": 0.05},  # chose the third
             {"k3_e1": 0.1, "k3_e6": 0.6, "k5_e3": 0.2, "skip": 0.1}]  # chose the argmax
    text = search_text(_report(micro_space, ("k3_e6", "k5_e3", "k3_e6"), alpha, tmp_path))
    rows = [line.split() for line in text.splitlines()[2:5]]
    assert [r[2:] for r in rows] == [["k3_e6", "0.300", "k3_e1", "0.500"],
                                     ["k5_e3", "0.150", "k3_e1", "0.500"],
                                     ["k3_e6", "0.600", "k5_e3", "0.200"]]


def test_a_layer_with_one_candidate_has_no_runner_up():
    from pipeline.render import runner_up

    assert runner_up({"k3_e1": 1.0}, "k3_e1") is None
    assert runner_up({"a": 0.4, "b": 0.4, "c": 0.2}, "a") == ("b", 0.4)


def test_alpha_is_saved_at_full_precision_so_near_ties_keep_their_order(micro_space, tmp_path):
    from blocks.architecture import Architecture, load_architecture
    from blocks.network import SuperNet
    from pipeline.training.search import SearchResult

    net = SuperNet(micro_space, 10)
    with torch.no_grad():
        for layer, winner in zip(net.layers, (0, 2, 3)):
            layer.theta.zero_()
            layer.theta[winner] = 4e-7  # α differ in the 7th decimal: equal once rounded to 6
    r = SearchResult(net, net.derive())
    table = r.alpha_table()
    assert [list(a.values()) for a in table] == [[float(v) for v in a.detach()] for a in net.alphas()]
    assert len({round(v, 6) for v in table[0].values()}) == 1  # what rounding would have saved: a tie
    path = tmp_path / "architecture.json"
    Architecture(micro_space, r.blocks, {"alpha": table}).save(path)
    saved = load_architecture(path).info["alpha"]
    assert saved == table
    assert tuple(max(a, key=a.get) for a in saved) == net.derive() == ("k3_e1", "k5_e3", "skip")


def test_a_layer_is_decided_when_its_chosen_alpha_is_at_least_one_and_a_half_times_the_runner_up():
    from pipeline.training.search import alpha_margins, decided_layers

    assert alpha_margins([[0.3, 0.2, 0.5], [0.25, 0.25], [1.0]]) == [pytest.approx(5 / 3), 1.0, float("inf")]
    table = [{"a": 0.75, "b": 0.5}, {"a": 0.59, "b": 0.41}, {"a": 0.2, "b": 0.2, "c": 0.6}]
    assert decided_layers(table) == 2  # 1.5 exactly counts; 0.59/0.41 does not
