"""Bad target files (`--target my.yaml`): one line naming the field, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from benchmarks.targets import Target, resolve_target
from core.errors import PipelineError
from tests.input_cases import cli_error, mutated, object_or_one_line

BAD = [
    ("base: desktop\ntolerance: {atol: abc, rtol: 0.1}\n", "tolerance.atol = 'abc': expected a number from 0 to below 1,000"),
    ("base: desktop\ntolerance: {atol: 1e-3, rtol: 0.1}\n", "tolerance.atol = '1e-3': expected a number from 0 to below 1,000, not text"),
    ("base: desktop\ntolerance: {atol: 0.1}\n", "tolerance.rtol is missing: it is required"),
    ("base: desktop\ntolerance: {atol: .inf, rtol: 0.1}\n", "tolerance.atol = inf: expected a number"),
    ("base: [desktop]\n", "base = ['desktop']: expected text"),
    ("base: nosuch\n", "base: unknown target 'nosuch'; valid names: ios"),
    ("base: desktop\nrunner: nope\n", "runner: unknown runner 'nope'; valid names:"),
    ("exporter: onnx\n", "needs 'exporter' and 'runner', or 'base'"),
    ("base: desktop\ncolour: red\n", "unknown key 'colour'; valid keys: base, description"),
    ("base: desktop\nexporter_options: [opset]\n", "exporter_options = ['opset']: expected a mapping"),
    ("base: desktop\nexporter_options: {opset: [1]}\n", "exporter_options.opset = [1]: expected text, a finite number"),
    ("base: desktop\nexporter_options: {opset: '18'}\n", "onnx exporter options: opset = '18': expected an integer"),
    ("base: desktop\nexporter_options: {colour: 1}\n", "has no option 'colour'; its options: dynamo"),
    ("base: desktop\nname: 3\n", "name = 3: expected text"),
    ("- desktop\n", "holds ['desktop'] at the top level; it must hold a mapping"),
    ("base: desktop\nx: !!python/object:os.system ls\n", "is not valid YAML"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_target_file_is_one_line_and_writes_nothing(tmp_path: Path, micro_space_file: Path, text: str,
                                                        message: str) -> None:
    target = tmp_path / "my.yaml"
    target.write_text(text)
    out = tmp_path / "ws"
    line = cli_error(["benchmark", "--target", str(target), "--space", str(micro_space_file), "--out", str(out), "-q"],
                     out)
    assert f"target file '{target}'" in line and message in line, line


def test_target_file_that_is_not_utf8(tmp_path: Path) -> None:
    target = tmp_path / "my.yaml"
    target.write_bytes(b"base: desktop\ndescription: caf\xe9\n")
    with pytest.raises(PipelineError, match=r"target file '.*my.yaml' is not UTF-8 text \(byte 30 is b'\\xe9'\)"):
        resolve_target(str(target))


def test_a_good_target_file_still_reads(tmp_path: Path) -> None:
    target = tmp_path / "my.yaml"
    target.write_text("base: desktop\ntolerance: {atol: 0.002, rtol: 1}\nexporter_options: {opset: 17}\n")
    t = resolve_target(str(target))
    assert (t.name, t.exporter_options["opset"], t.tolerance.atol, t.tolerance.rtol) == ("my", 17, 0.002, 1.0)


VALID = {"name": "mine", "description": "ONNX, opset 17", "base": "desktop", "exporter": "onnx",
         "runner": "onnxruntime", "exporter_options": {"opset": 17, "dynamo": False},
         "tolerance": {"atol": 0.001, "rtol": 0.01}}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID))
def test_mutated_target_files_give_a_target_or_one_line(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    f = tmp_path_factory.mktemp("target") / "t.yaml"
    f.write_text(yaml.safe_dump(doc))
    target = object_or_one_line(lambda: resolve_target(str(f)), f"target file '{f}'")
    assert target is None or isinstance(target, Target)
