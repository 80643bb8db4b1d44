"""Bad latency tables (this tool's JSON): one line naming the field, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.table import LatencyTable, Row, load_table
from core.errors import PipelineError
from tests.conftest import make_table
from tests.input_cases import cli_error, mutated, object_or_one_line


def _row(**change: Any) -> Callable[[dict], None]:
    return lambda d: d["rows"][3].update(change)


BAD = [
    (_row(layers=5), "rows.3.layers = 5: expected a list"),
    (_row(median_ms=10**400), "rows.3.median_ms = <an integer of about 401 digits>: expected a latency in ms"),
    (_row(median_ms=1e308), "rows.3.median_ms = 1e+308: expected a latency in ms from 0 to below 1,000,000"),
    (_row(in_ch=float("inf")), "rows.3.in_ch = inf: expected an integer from 1 to 100000"),
    (_row(in_ch="16"), "rows.3.in_ch = '16': expected an integer"),
    (_row(stride=3), "rows.3.stride = 3: expected 1 or 2"),
    (_row(height=0), "rows.3.height = 0: expected an integer from 1 to 4096"),
    (_row(status="fine"), "rows.3.status = 'fine': expected one of 'ok', 'unavailable' or 'failed'"),
    (_row(count=float("nan")), "rows.3.count = nan: expected text, a finite number below 1e12"),
    (_row(samples_ms=[1.0, {"a": 1}]), "rows.3.samples_ms = [1.0, {'a': 1}]"),
    (_row(statistic="p99"), "rows.3.statistic = 'p99': expected one of 'median' or 'mean'"),
    (lambda d: d["rows"].__setitem__(2, 7), "rows.2 = 7: expected a mapping"),
    (lambda d: d.update(rows={}), "rows = {}: expected a list"),
    (lambda d: d.update(provenance=[1]), "provenance = [1]: expected a mapping"),
    (lambda d: d.update(calibration=3), "calibration = 3: expected a mapping"),
    (lambda d: d.update(colour="red"), "unknown key 'colour'; valid keys: calibration, format, provenance, rows"),
    (lambda d: d["rows"][0].pop("block"), "rows.0.block is missing: it is required"),
]


def _table_file(tmp_path: Path, micro_space: Any, mutate: Callable[[dict], None]) -> Path:
    data = json.loads(make_table(micro_space).to_json())
    mutate(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))  # Infinity/NaN are written as JSON's extensions, as Python reads them
    return path


@pytest.mark.parametrize("mutate,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_table_is_one_line_and_writes_nothing(tmp_path: Path, micro_space_file: Path, micro_space: Any,
                                                  mutate: Callable[[dict], None], message: str) -> None:
    table = _table_file(tmp_path, micro_space, mutate)
    before = table.read_bytes()
    out = tmp_path / "ws"
    line = cli_error(["search", "--space", str(micro_space_file), "--table", str(table), "--out", str(out),
                      "--epochs", "1"], out)
    assert f"latency table '{table}': " in line and message in line, line
    assert table.read_bytes() == before


def test_in_ch_written_as_infinity_literal(tmp_path: Path, micro_space: Any) -> None:
    table = _table_file(tmp_path, micro_space, lambda d: None)
    table.write_text(table.read_text().replace('"in_ch": 8,', '"in_ch": Infinity,', 1))
    with pytest.raises(PipelineError, match=r"rows\.\d+\.in_ch = inf: expected an integer from 1 to 100000"):
        load_table(table)


def test_published_mean_is_named_as_such_and_old_tables_still_read(tmp_path: Path, micro_space: Any) -> None:
    table = make_table(micro_space)
    row = next(iter(table.rows.values()))
    row.statistic = "mean"
    d = row.to_dict()
    assert d["statistic"] == "mean" and d["ms"] == row.median_ms and "median_ms" not in d
    table.save(tmp_path / "new.json")
    back = load_table(tmp_path / "new.json")
    assert back.rows[row.key].statistic == "mean" and back.rows[row.key].median_ms == row.median_ms
    assert {r.statistic for k, r in back.rows.items() if k != row.key} == {"median"}
    # a table imported before rows named their statistic: the provenance's says what its median_ms hold
    old = json.loads(make_table(micro_space).to_json())
    old["provenance"]["statistic"] = "mean"
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert {r.statistic for r in load_table(tmp_path / "old.json").rows.values()} == {"mean"}


def _valid_doc() -> dict:
    from blocks.space import space_from_dict
    from tests.conftest import MICRO_SPACE
    import yaml

    return json.loads(make_table(space_from_dict(yaml.safe_load(MICRO_SPACE), "micro")).to_json())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(_valid_doc()))
def test_mutated_tables_give_a_table_or_one_line(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    f = tmp_path_factory.mktemp("table") / "t.json"
    f.write_text(json.dumps(doc))
    table = object_or_one_line(lambda: load_table(f))
    assert table is None or (isinstance(table, LatencyTable) and all(isinstance(r, Row) for r in table.rows.values()))
