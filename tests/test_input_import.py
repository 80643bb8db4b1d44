"""Bad lookup tables to import (`pipeline benchmark import FILE`): one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from benchmarks.importers import import_table
from benchmarks.table import LatencyTable
from blocks.space import space_from_dict
from core.errors import PipelineError
from tests.input_cases import cli_error, mutated, object_or_one_line
from tests.test_import import K3_REPEAT, MINI_ROWS, MINI_SPACE

BAD = [
    ("? [1, 2]\n: {mean: 1.0}\n", "key [1, 2] (line 7) is not text"),
    (K3_REPEAT.replace("stride:1", "stride:0") + ": {mean: 1.0}\n", "stride = 0: expected 1 or 2"),
    (K3_REPEAT.replace("kernel:3", "kernel:99") + ": {mean: 1.0}\n", "kernel = 99: expected an integer from 1 to 15"),
    (K3_REPEAT.replace("input:4x4x16", "input:0x4x16") + ": {mean: 1.0}\n", "input = [0, 4, 16]: expected HxWxC"),
    (K3_REPEAT.replace("idskip:1", "idskip:1-colour:3") + ": {mean: 1.0}\n", "unknown key 'colour'"),
    (f"{K3_REPEAT}: {{mean: 1.0, count: {10**400}}}\n", "count = <an integer of about 401 digits>: expected an integer"),
    (f"{K3_REPEAT}: {{mean: 1.0e+308}}\n", "mean = 1e+308: expected a latency in ms from 0 to below 1,000,000"),
    (f"{K3_REPEAT}: {{mean: abc}}\n", "mean = 'abc': expected a latency in ms"),
    (f"{K3_REPEAT}: {{mean: 1.0, std: .inf}}\n", "std = inf: expected a deviation in ms"),
    (f"{K3_REPEAT}: {{mean: 1.0, median: 2.0}}\n", "unknown key 'median'; valid keys: count, mean, std, unit, var"),
    (f"{K3_REPEAT}: [1.0]\n", "' = [1.0]: expected a mapping"),
    (f"{K3_REPEAT}: !!python/object:os.system ls\n", "neither valid JSON nor YAML"),
]


def _lut_text(extra: str) -> str:
    rows = {k: v for k, v in MINI_ROWS.items() if k != K3_REPEAT}
    return "".join(f"{k}: {v}\n" for k, v in rows.items()) + extra


@pytest.mark.parametrize("extra,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_lookup_table_is_one_line_and_writes_nothing(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "mini.yaml").write_text(MINI_SPACE)
    lut = tmp_path / "lut.yaml"
    lut.write_text(_lut_text(extra))
    out = tmp_path / "ws"
    line = cli_error(["benchmark", "import", str(lut), "--target", "android", "--device", "pixel1",
                      "--space", str(tmp_path / "mini.yaml"), "--out", str(out)], out)
    assert str(lut) in line and message in line, line


def test_lookup_table_that_is_not_utf8(tmp_path: Path) -> None:
    lut = tmp_path / "lut.yaml"
    lut.write_bytes(_lut_text(f"{K3_REPEAT}: {{mean: 3.0}}\n").encode() + b"# \xff\n")
    mini = space_from_dict(yaml.safe_load(MINI_SPACE), "mini")
    with pytest.raises(PipelineError, match="is not UTF-8 text"):
        import_table(lut, "android", "pixel1", mini)


def test_imported_rows_say_they_hold_the_published_mean(tmp_path: Path) -> None:
    lut = tmp_path / "lut.yaml"
    lut.write_text(_lut_text(f"{K3_REPEAT}: {{mean: 3.0}}\n"))
    table = import_table(lut, "android", "pixel1", space_from_dict(yaml.safe_load(MINI_SPACE), "mini"))
    assert {r.statistic for r in table.rows.values()} == {"mean"}
    assert table.rows["mb_k3_e3/16x4x4-16-s1"].to_dict()["ms"] == 3.0


VALID = yaml.safe_load(_lut_text(f"{K3_REPEAT}: {{count: 9, mean: 3.0, var: 0.01}}\n"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID))
def test_mutated_lookup_tables_give_a_table_or_one_line(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    f = tmp_path_factory.mktemp("lut") / "lut.yaml"
    f.write_text(yaml.safe_dump(doc))
    mini = space_from_dict(yaml.safe_load(MINI_SPACE), "mini")
    table = object_or_one_line(lambda: import_table(f, "android", "pixel1", mini))
    assert table is None or (isinstance(table, LatencyTable) and table.rows)
