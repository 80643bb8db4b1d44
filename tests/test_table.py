import json
import math

import pytest

from benchmarks.table import load_table, required_rows
from core.errors import PipelineError
from tests.conftest import make_table


def test_round_trip_keeps_every_row_and_the_provenance(tmp_path, micro_space, micro_table):
    micro_table.provenance.update(host={"cpu": "test cpu", "cores": 2}, threads=1)
    path = tmp_path / "t.json"
    micro_table.save(path)
    back = load_table(path)
    assert back.provenance == micro_table.provenance
    assert {k: (r.median_ms, r.shape, r.stats) for k, r in back.rows.items()} == \
           {k: (r.median_ms, r.shape, r.stats) for k, r in micro_table.rows.items()}
    back.check_fits(micro_space)


def test_identical_shapes_are_required_once(micro_space):
    # micro: layer 0 is 8->8 s1 at 8x8, layer 1 8->16 s2, layer 2 16->16 s1: all distinct;
    # a second identical layer adds no rows.
    rows = required_rows(micro_space)
    assert len(rows) == 3 + 3 * 4  # fixed parts + 3 shapes x 4 blocks
    assert len({(b, s) for b, s in rows}) == len(rows)


def _write(tmp_path, micro_table, mutate):
    data = json.loads(micro_table.to_json())
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["rows"][3].update(median_ms=float("nan")), r"rows\.3\.median_ms = nan: expected a latency in ms from 0"),
    (lambda d: d["rows"][3].update(median_ms=-1.0), r"rows\.3\.median_ms = -1\.0: expected a latency in ms from 0 "
                                                    "to below 1,000,000"),
    (lambda d: d["rows"].append(dict(d["rows"][0])), "appears twice"),
    (lambda d: d.update(version=99), "format version 99"),
    (lambda d: d.update(format="something"), "is not a latency table"),
    (lambda d: d["rows"][0].update(key="k3_e1/1x1x1-1-s1"), "does not match its fields"),
    (lambda d: d["rows"][0].pop("in_ch"), r"rows\.0\.in_ch is missing: it is required"),
])
def test_bad_tables_are_refused(tmp_path, micro_table, mutate, match):
    with pytest.raises(PipelineError, match=match):
        load_table(_write(tmp_path, micro_table, mutate))


def test_truncated_table_is_refused(tmp_path, micro_table):
    p = tmp_path / "t.json"
    p.write_text(micro_table.to_json()[:-40])
    with pytest.raises(PipelineError, match="corrupt or truncated"):
        load_table(p)


def test_table_for_another_space_names_the_missing_row(micro_space):
    from blocks import resolve_space
    table = make_table(micro_space)
    with pytest.raises(PipelineError, match="does not fit space 'tiny': no row 'stem/1x32x32-16-s2'.*"
                                            "run 'pipeline benchmark --target desktop --space tiny' to measure"):
        table.check_fits(resolve_space("tiny"))
    phone = make_table(micro_space, target="android", device="pixel1")
    with pytest.raises(PipelineError, match="'pipeline benchmark --target android --space tiny --device pixel1'"):
        phone.check_fits(resolve_space("tiny"))


def test_a_folder_given_as_a_table_is_named_as_one(tmp_path):
    with pytest.raises(PipelineError, match=f"latency table '{tmp_path}' is a folder; pass the file itself"):
        load_table(tmp_path)


def test_saved_table_is_valid_json_with_one_row_per_line(tmp_path, micro_table):
    path = tmp_path / "t.json"
    micro_table.save(path)
    lines = path.read_text().splitlines()
    assert sum(1 for l in lines if l.strip().startswith('{"key"')) == len(micro_table.rows)
    assert math.isfinite(json.loads(path.read_text())["rows"][0]["median_ms"])
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def _measured_like(micro_table):
    """The micro table with the provenance and raw samples a real benchmark writes."""
    data = json.loads(micro_table.to_json())
    data["provenance"].update(threads=1, protocol={"repeats": 3, "threads": 1})
    for row in data["rows"]:
        m = row["median_ms"]
        row.update(count=3, samples_ms=[round(m * 0.99, 6), round(m, 6), round(m * 1.02, 6)])
    return data


def test_rows_kept_from_a_run_with_other_repeats_still_load(tmp_path, micro_table):
    data = _measured_like(micro_table)
    row = data["rows"][0]
    row.update(count=5, samples_ms=row["samples_ms"] + [row["samples_ms"][0], row["samples_ms"][2]])
    (tmp_path / "t.json").write_text(json.dumps(data))
    assert load_table(tmp_path / "t.json").rows[row["key"]].stats["count"] == 5


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["rows"][0].update(median_ms=d["rows"][0]["median_ms"] * 0.5), "its own raw samples' median is"),
    (lambda d: d["rows"][1].update(count=5), "3 raw samples for a count of 5"),
    (lambda d: d["rows"][2]["samples_ms"].pop(), "2 raw samples for a count of 3"),
    (lambda d: d["provenance"].update(threads=4), "provenance says 4 threads but its protocol 1"),
])
def test_rows_that_disagree_with_their_own_provenance_are_refused(tmp_path, micro_table, edit, match):
    good = _measured_like(micro_table)
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert len(load_table(tmp_path / "good.json").rows) == len(micro_table.rows)
    edit(good)
    (tmp_path / "bad.json").write_text(json.dumps(good))
    with pytest.raises(PipelineError, match=match):
        load_table(tmp_path / "bad.json")


def _referenced_like(micro_table):
    """The micro table as measured against a reference row: raw samples, the reference's beside
    them, each row's ratio and its latency at the reference's median over all rows."""

    for i, row in enumerate(micro_table.rows.values()):
        m = row.median_ms
        ref = [0.5, 0.5 * (1.1 + 0.01 * i), 0.45]  # the machine wobbles under both alike
        raw = [round(m * r / 0.5 * f, 6) for r, f in zip(ref, (0.98, 1.0, 1.03))]  # and the row's own noise
        row.stats = {"count": 3, "samples_ms": raw, "reference_ms": ref,
                     "ratio": sorted(a / b for a, b in zip(raw, ref))[1], "p10_ms": m, "p90_ms": m}
    micro_table.provenance.update(threads=1, reference={"row": "k3_e1/8x8x8-8-s1", "block": "k3_e1", "median_ms": None})
    micro_table.apply_reference()
    return json.loads(micro_table.to_json())


def test_rows_timed_against_a_reference_share_its_median_over_every_row(tmp_path, micro_table):
    costs = {k: r.median_ms for k, r in micro_table.rows.items()}
    data = _referenced_like(micro_table)
    assert data["provenance"]["reference"]["median_ms"] == 0.5  # median of every row's reference times
    for row in data["rows"]:
        assert row["median_ms"] == pytest.approx(costs[row["key"]], rel=1e-5)  # ratio × 0.5 gives back the cost
    (tmp_path / "t.json").write_text(json.dumps(data))
    data["rows"].pop()  # a row dropped by hand (to remeasure it) leaves the others valid
    (tmp_path / "fewer.json").write_text(json.dumps(data))
    assert len(load_table(tmp_path / "t.json").rows) == len(load_table(tmp_path / "fewer.json").rows) + 1


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["rows"][0].update(ratio=d["rows"][0]["ratio"] * 1.1), "its own samples give"),
    (lambda d: d["rows"][1]["reference_ms"].__setitem__(1, 0.9), "its own samples give"),
    (lambda d: d["provenance"]["reference"].update(median_ms=0.6), "its ratio times the reference's median"),
    (lambda d: d["provenance"].pop("reference"), "no reference row"),
    (lambda d: d["rows"][2].update(reference_ms=[0.5]), "no reference row or its samples"),
    (lambda d: d["rows"][2].update(ratio="fast"), "not a number"),
    (lambda d: d["provenance"]["reference"].update(median_ms="slow"), "not a number"),
])
def test_referenced_rows_that_disagree_with_their_reference_are_refused(tmp_path, micro_table, edit, match):
    data = _referenced_like(micro_table)
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=match):
        load_table(tmp_path / "bad.json")
