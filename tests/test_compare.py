"""Comparing architectures across tables: the cross matrix, the layer table, the report and the plot."""

import json

import pytest

from blocks.architecture import Architecture
from blocks.network import DerivedNet
from pipeline.stages.compare import render
from pipeline.stages.compare.render import write_outputs
from pipeline.stages.compare.report import Comparison, Entry, compare, load_entry
from core.errors import PipelineError
from pipeline.training.weights import save_weights
from core.workspace import weights_path
from tests.conftest import MICRO_SPACE, make_table

# Three devices with different tastes (ms per block; the fixed parts cost 0.5 each, 1.5 in all).
# micro's layers: 0 = 8x8x8-8-s1, 1 = 8x8x8-16-s2, 2 = 16x4x4-16-s1; every block fits every layer.
DESKTOP = {"k3_e1": 1.0, "k3_e6": 3.0, "k5_e3": 2.0, "skip": 0.1}  # skip costs 1.5 at stride 2 (a 1x1 conv)
ANDROID = {"k3_e1": 2.0, "k3_e6": 1.0, "k5_e3": 3.0, "skip": 4.0}  # k3_e1 costs 0.5 at stride 2
PIXEL = {"k3_e1": 3.0, "k3_e6": 2.0, "k5_e3": 0.5, "skip": 1.0}
# The fastest block per layer under each table: the architecture searched for it.
ARCHS = {
    "desktop/host": ("skip", "k3_e1", "skip"),
    "android/host": ("k3_e6", "k3_e1", "k3_e6"),
    "android/pixel1": ("k5_e3", "k5_e3", "k5_e3"),
}
# Hand-computed sums: rows = architecture searched for, columns = table it is timed with.
CROSS = [
    [1.5 + 0.1 + 1.0 + 0.1, 1.5 + 4.0 + 0.5 + 4.0, 1.5 + 1.0 + 3.0 + 1.0],  # desktop's
    [1.5 + 3.0 + 1.0 + 3.0, 1.5 + 1.0 + 0.5 + 1.0, 1.5 + 2.0 + 3.0 + 2.0],  # android's
    [1.5 + 2.0 * 3, 1.5 + 3.0 * 3, 1.5 + 0.5 * 3],  # pixel1's
]

# The micro space with a different last stage: another space, sharing some layer shapes.
OTHER_SPACE = MICRO_SPACE.replace("name: micro", "name: other").replace("  - [16, 2, 2]", "  - [24, 1, 2]")


def _tables(space):
    return {
        "desktop/host": make_table(
            space, lambda b, s: 1.5 if (b, s.stride) == ("skip", 2) else DESKTOP.get(b, 0.5), "desktop", "host"),
        "android/host": make_table(
            space, lambda b, s: 0.5 if (b, s.stride) == ("k3_e1", 2) else ANDROID.get(b, 0.5), "android", "host"),
        "android/pixel1": make_table(space, lambda b, s: PIXEL.get(b, 0.5), "android", "pixel1"),
    }


def _entry(tmp_path, label, table, space, blocks, info=None):
    name = label.replace("/", "-")
    tpath, apath = tmp_path / f"{name}.table.json", tmp_path / f"{name}.architecture.json"
    table.save(tpath)
    arch = Architecture(space, blocks, info or {})
    arch.save(apath)
    return Entry(label, table, tpath, arch, apath)


@pytest.fixture
def entries(tmp_path, micro_space):
    return [_entry(tmp_path, label, table, micro_space, ARCHS[label]) for label, table in _tables(micro_space).items()]


@pytest.fixture
def other_entry(tmp_path):
    from blocks import resolve_space

    (tmp_path / "other.yaml").write_text(OTHER_SPACE)
    space = resolve_space(str(tmp_path / "other.yaml"))
    return _entry(tmp_path, "other/host", make_table(space, target="other"), space, ("k3_e1", "k3_e6"))


def test_cross_matrix_is_the_hand_computed_sums_and_own_is_fastest(entries):
    c = compare(entries)
    assert [list(r) for r in c.predicted] == [pytest.approx(r) for r in CROSS]
    for j in range(3):
        assert c.predicted[j][j] == min(row[j] for row in c.predicted)
        assert c.fastest(j) == j
    assert c.measured is None


def test_layer_differences_and_preferred_blocks(entries):
    c = compare(entries)
    (g,) = c.groups
    assert g.members == (0, 1, 2) and g.tables == (0, 1, 2)
    assert g.differing == (0, 1, 2)  # layer 1: desktop and android agree on k3_e1, pixel1 takes k5_e3
    assert g.fastest == tuple(ARCHS.values())
    assert len(g.disagreeing_shapes()) == 3
    assert compare(entries[:2]).groups[0].differing == (0, 2)
    assert c.block_counts(0) == {"k3_e1": 1, "skip": 2}


def test_markdown_states_the_claim_from_the_numbers(entries):
    md = render.to_markdown(compare(entries), plot="compare.png")
    assert ("predicted: on android/pixel1, the architecture searched for it is the fastest "
            "(3.000 ms; searched for desktop/host +116.7%, searched for android/host +183.3%)") in md
    assert "the architecture searched for a device is the fastest under it for 3 of 3 table(s)" in md
    assert "differ in 3 of 3 layer(s)" in md
    assert "the tables disagree on the fastest candidate at 3 of 3 layer shape(s)" in md
    assert "![cross matrix and latencies per device](compare.png)" in md


def test_a_faster_foreign_architecture_is_reported(tmp_path, micro_space, entries):
    # An architecture "searched for" pixel1 that is slower there than desktop's: the claim fails, and says so.
    slow = _entry(tmp_path, "android/pixel1", entries[2].table, micro_space, ("k3_e1", "k3_e1", "k3_e1"))
    text = "\n".join(compare([entries[0], slow]).summary())
    assert "on android/pixel1, the architecture searched for it is NOT the fastest (10.50 ms)" in text
    assert "for 1 of 2 table(s)" in text


def test_architectures_of_different_spaces_are_refused_in_one_line(entries, other_entry):
    # Each table times one space's blocks only: the matrix would be n/a off the diagonal's own
    # space, and the accuracies of different spaces' networks would be set side by side.
    with pytest.raises(PipelineError) as e:
        compare([*entries, other_entry])
    micro, other = entries[0].architecture.space.fingerprint, other_entry.architecture.space.fingerprint
    assert str(e.value) == (
        f"compare needs architectures of one search space, got 2 (space 'micro' ({micro}): desktop/host, "
        f"android/host, android/pixel1; space 'other' ({other}): other/host); compare each space's entries "
        "in a run of their own")


def test_measure_callback_fills_the_measured_matrix(entries):
    calls = []

    def measure(entry, arch):
        calls.append((entry.label, arch.blocks))
        return 2.0 * len(set(arch.blocks)) if entry.table.target == "desktop" else None

    c = compare(entries, measure)
    assert len(calls) == 9
    assert [row[0] for row in c.measured] == [4.0, 4.0, 2.0]
    assert all(row[j] is None for row in c.measured for j in (1, 2))
    assert "measured: on desktop/host, the architecture searched for it is NOT the fastest" in "\n".join(c.summary())
    assert "measured latency" in render.to_text(c)


def test_accuracy_from_the_search_record_and_trained_weights(tmp_path, micro_space, entries):
    info = {"inherited_test_accuracy": 0.8, "supernet_test_accuracy": 0.7}
    e = _entry(tmp_path, "android/pixel1", entries[2].table, micro_space, ARCHS["android/pixel1"], info)
    net = DerivedNet(micro_space, e.architecture.blocks, micro_space.num_classes)
    save_weights(weights_path(e.arch_path, "trained"), net, "trained", 0.9)
    c = compare([entries[0], e])
    assert c.accuracy[0].best is None
    assert (c.accuracy[1].inherited, c.accuracy[1].trained, c.accuracy[1].supernet) == (0.8, 0.9, 0.7)
    assert "android/pixel1 0.900 (trained)" in render.to_text(c) and "desktop/host -" in render.to_text(c)
    assert c.to_dict()["entries"][1]["accuracy"] == {"inherited": 0.8, "trained": 0.9, "supernet": 0.7}


DIGITS = {"source": "digits", "classes": 10, "w": 1000, "theta": 437, "test": 360}


@pytest.mark.parametrize("other_data,sentence", [
    (DIGITS, "test accuracy: desktop/host 0.800 (inherited), android/host 0.600 (inherited); spread 20.0 points"),
    ({**DIGITS, "source": "photos/", "classes": 3, "test": 30},
     "test accuracy: desktop/host 0.800 (inherited), android/host 0.600 (inherited); not compared, the searches "
     "used different data (desktop/host: digits, 10 classes, 360 test images; android/host: photos/, 3 classes, "
     "30 test images); search on the same data to compare accuracy"),
])
def test_accuracies_are_compared_only_on_the_same_data(tmp_path, micro_space, other_data, sentence):
    tables = _tables(micro_space)
    c = compare([_entry(tmp_path, label, tables[label], micro_space, ARCHS[label],
                        {"inherited_test_accuracy": acc, "data": data})
                 for label, acc, data in (("desktop/host", 0.8, DIGITS), ("android/host", 0.6, other_data))])
    assert c.summary()[-1] == sentence
    assert sentence in render.to_markdown(c)


def test_trained_weights_of_another_architecture_are_ignored(tmp_path, micro_space, entries):
    net = DerivedNet(micro_space, ("k3_e1",) * 3, micro_space.num_classes)
    save_weights(weights_path(entries[0].arch_path, "trained"), net, "trained", 0.9)
    assert compare(entries).accuracy[0].trained is None


def test_plot_is_a_valid_png(tmp_path, entries):
    import matplotlib.image

    path = tmp_path / "out" / "compare.png"
    render.plot(compare(entries, lambda e, a: 1.0 if e.label == "desktop/host" else None), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h, w, channels = matplotlib.image.imread(path).shape
    assert h > 200 and w > 400 and channels in (3, 4)
    assert [p.name for p in path.parent.iterdir()] == ["compare.png"]  # no temporary file left


def _colour_bar(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # tick labels and the offset text exist once drawn
    (bar,) = [im.colorbar for ax in fig.axes for im in ax.images if im.colorbar is not None]
    return bar, [t.get_text() for t in bar.ax.yaxis.get_ticklabels()], bar.ax.yaxis.get_offset_text().get_text()


def test_colour_bar_stays_readable_when_every_cell_is_x1(tmp_path, micro_space, entries):
    # The same architecture entered for two tables: every cell is the fastest under its table, ×1.00.
    twin = _entry(tmp_path, "android/host", entries[1].table, micro_space, ARCHS["desktop/host"])
    c = compare([entries[0], twin])
    assert all(c.predicted[0][j] == c.predicted[1][j] for j in range(2))
    bar, labels, offset = _colour_bar(render.figure(c))
    assert (bar.vmin, bar.vmax) == (1.0, pytest.approx(1.1))
    assert offset == ""  # no "1e-7+1" above the bar
    assert labels[0] == "×1.00" and labels[-1] == "×1.10"
    assert len(set(labels)) == len(labels) and [float(t[1:]) for t in labels] == sorted(float(t[1:]) for t in labels)


def test_colour_bar_spans_the_largest_ratio(entries):
    bar, labels, offset = _colour_bar(render.figure(compare(entries)))
    top = max(CROSS[i][j] / min(r[j] for r in CROSS) for i in range(3) for j in range(3))  # 9.0 / 3.0
    assert (bar.vmin, bar.vmax) == (1.0, pytest.approx(top))
    assert offset == "" and labels[0] == "×1.00" and all(t.startswith("×") for t in labels)


def test_write_outputs(tmp_path, entries):
    paths = write_outputs(compare(entries), tmp_path / "cmp")
    assert {p.name for p in paths.values()} == {"compare.md", "compare.json", "compare.png"}
    data = json.loads(paths["json"].read_text())
    assert data["predicted_ms"]["android/host"]["android/pixel1"] == pytest.approx(CROSS[1][2])
    assert data["fastest"] == {label: label for label in ARCHS}
    assert data["spaces"][0]["differing_layers"] == [0, 1, 2]
    assert "](compare.png)" in paths["markdown"].read_text()


def test_load_entry_labels_by_target_and_device(entries):
    e = load_entry(entries[2].table_path, entries[2].arch_path)
    assert e.label == "android/pixel1" and e.architecture.blocks == ARCHS["android/pixel1"]
    assert isinstance(compare([e, entries[0]]), Comparison)


def test_fewer_than_two_entries(entries):
    with pytest.raises(PipelineError, match="at least two"):
        compare(entries[:1])


def test_duplicate_labels(tmp_path, micro_space, entries):
    twin = _entry(tmp_path, "desktop/host", entries[1].table, micro_space, ARCHS["android/host"])
    with pytest.raises(PipelineError, match="two entries are labelled 'desktop/host'"):
        compare([entries[0], twin])


def test_architecture_that_does_not_fit_its_own_table(tmp_path, entries, other_entry):
    wrong = Entry("mixed/host", entries[0].table, entries[0].table_path, other_entry.architecture, other_entry.arch_path)
    with pytest.raises(PipelineError, match="does not fit space 'other'.*pipeline benchmark --target desktop --space other'"):
        compare([entries[1], wrong])


def test_a_failing_measurement_leaves_its_cell_empty(entries, caplog):
    def measure(entry, arch):
        if arch.blocks == ARCHS["android/host"]:
            raise PipelineError("export failed")
        return 1.0

    c = compare(entries, measure)
    assert [row[0] for row in c.measured] == [1.0, None, 1.0]
    assert "export failed" in caplog.text


def test_corrupt_trained_weights_are_logged_not_fatal(entries, caplog):
    weights_path(entries[0].arch_path, "trained").write_bytes(b"not a weights file")
    assert compare(entries).accuracy[0].trained is None
    assert "is corrupt or not a weights file" in caplog.text


def _cli(*args):
    from click.testing import CliRunner

    from pipeline.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_label_names_entries_that_would_share_one(tmp_path, micro_space, entries):
    """Two architectures searched with the same table: only --label tells them apart."""
    (tmp_path / "twin").mkdir()
    twin = _entry(tmp_path / "twin", "desktop/host", entries[0].table, micro_space, ARCHS["android/host"])
    pair = [f"{e.table_path}={e.arch_path}" for e in (entries[0], twin)]
    r = _cli("compare", *pair, "--out", tmp_path, "--no-measure")
    assert r.exit_code == 2 and "give each entry its own label" in r.stderr
    r = _cli("compare", *pair, "--label", "skips", "--label", "wide", "--out", tmp_path, "--no-measure")
    assert r.exit_code == 0, r.stderr
    assert "\nskips " in r.stdout and "\nwide " in r.stdout
    assert [e["label"] for e in json.loads((tmp_path / "compare/compare.json").read_text())["entries"]] == ["skips", "wide"]


def test_cli_label_count_must_match_the_entries(tmp_path, entries):
    specs = [f"{e.table_path}={e.arch_path}" for e in entries]
    r = _cli("compare", *specs, "--label", "a", "--label", "b", "--out", tmp_path, "--no-measure")
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: --label given 2 time(s) for 3 entries; give one per entry, in the order of "
                                "the entries, or none")
