"""Bad `-o KEY=VALUE` target options: one line naming the option, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.targets import parse_options, resolve_target
from core.errors import PipelineError
from tests.input_cases import cli_error

BAD = [
    ("precision=[1", "target option 'precision=[1': the value '[1' is not a YAML scalar; quote it"),
    ("x=!!python/object:os.system ls", "the value '!!python/object:os.system ls' is not a YAML scalar"),
    ("opset=[1, 2]", "--target-option/-o: opset = [1, 2]: expected text, a finite number or true/false"),
    ("opset={a: 1}", "opset = {'a': 1}: expected text, a finite number or true/false"),
    ("opset=.nan", "opset = nan: expected text, a finite number"),
    ("opset=" + "9" * 30, "opset = 999999999999999999999999999999: expected text"),
    ("opset=fast", "onnx exporter options: opset = 'fast': expected an integer"),
    ("dynamo=maybe", "onnx exporter options: dynamo = 'maybe': expected true or false"),
    ("=3", "target option '=3' must look like KEY=VALUE"),
    ("opset", "target option 'opset' must look like KEY=VALUE"),
    ("compute_units=CPU_ONLY", "has no option 'compute_units'; its options: dynamo"),
]


@pytest.mark.parametrize("option,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_option_is_one_line_and_writes_nothing(tmp_path: Path, micro_space_file: Path, option: str,
                                                   message: str) -> None:
    out = tmp_path / "ws"
    line = cli_error(["benchmark", "--target", "desktop", "-o", option, "--space", str(micro_space_file), "--out",
                      str(out), "-q"], out)
    assert message in line, line


def test_good_options_are_read_as_yaml_scalars() -> None:
    assert parse_options(("opset=17", "dynamo=true", "name=fp16", "empty=")) == \
        {"opset": 17, "dynamo": True, "name": "fp16", "empty": ""}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["opset", "dynamo", "precision", "x"]),
       st.one_of(st.text(max_size=20), st.sampled_from(["[1", "{a", "!!python/name:os.system", "1e400", ".inf",
                                                        "- 1", "'", "&a [*a]", "9" * 5000, "17", "true", "null"])))
def test_any_option_value_gives_options_or_one_line(key: str, value: str) -> None:
    try:
        resolve_target("desktop", parse_options((f"{key}={value}",)))
    except PipelineError as e:
        assert "\n" not in str(e), str(e)
