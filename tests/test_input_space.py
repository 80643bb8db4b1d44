"""Bad search-space files (`--space my.yaml`): one line naming the field, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from blocks.space import SearchSpace, resolve_space, space_from_dict
from core.errors import PipelineError
from pipeline.cli import main
from tests.conftest import MICRO_SPACE
from tests.input_cases import cli_error, mutated, one_error_line, object_or_one_line

VALID = yaml.safe_load(MICRO_SPACE)


def _with(**change: object) -> str:
    return yaml.safe_dump({**VALID, **change}, sort_keys=False)


BAD = [
    (_with(stem_stride=0), "stem_stride = 0: expected 1 or 2"),
    (_with(blocks=[{"a": 1}]), "blocks = [{'a': 1}]: expected a block-set name or a list of block names"),
    (_with(stem_channels=-3), "stem_channels = -3: expected an integer from 1 to 4096"),
    (_with(resolution=1000000), "resolution = 1000000: expected an integer from 8 to 1024"),
    (_with(stages=[[0, 1, 1]]), "stages.0.channels = 0: expected an integer from 1 to 4096"),
    (_with(stages=[[8, 1, 1], {"channels": 16, "layers": 0, "stride": 2}]), "stages.1.layers = 0"),
    (_with(stages=[[8, 1]]), "stages.0 = [8, 1]: expected [channels, layers, stride]"),
    (_with(stages=[]), "stages = []: expected at least 1 item(s)"),
    (_with(head_channels=1e400), "head_channels = inf: expected an integer"),
    (_with(num_classes="10"), "num_classes = '10': expected an integer from 1 to 100000"),
    (_with(in_channels=True), "in_channels = True: expected an integer"),
    (_with(feature_mix_channels=10**400), "feature_mix_channels = <an integer of about 401 digits>"),
    (_with(colour="red"), "unknown key 'colour'; valid keys: blocks, description"),
    (_with(stages=[{"channels": 8, "layers": 1, "stride": 1, "kernel": 3}]), "unknown key 'kernel' in stages.0"),
    (_with(blocks="nosuchset"), "blocks: unknown block set 'nosuchset'"),
    (_with(resolution=1024, stem_stride=1, stem_channels=4096, stages=[[4096, 1, 1]]),
     "4096x1024x1024 feature map holds 4,294,967,296 values"),
    ("- 1\n- 2\n", "holds [1, 2] at the top level; it must hold a mapping"),
    ("resolution: [16\n", "is not valid YAML: expected ',' or ']'"),
    ("? [1, 2]\n: 3\n", "is not valid YAML"),
    ("x: !!python/object:os.system ls\n", "is not valid YAML"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_space_file_is_one_line_and_writes_nothing(tmp_path: Path, text: str, message: str) -> None:
    space = tmp_path / "my.yaml"
    space.write_text(text)
    out = tmp_path / "ws"
    line = cli_error(["benchmark", "--target", "desktop", "--space", str(space), "--out", str(out), "-q"], out)
    assert f"search-space file '{space}'" in line and message in line, line


def test_space_file_that_is_not_utf8(tmp_path: Path) -> None:
    space = tmp_path / "my.yaml"
    space.write_bytes(MICRO_SPACE.encode().replace(b"name: micro", b"name: micr\xff"))
    r = CliRunner().invoke(main, ["benchmark", "--target", "desktop", "--space", str(space), "--out",
                                  str(tmp_path / "ws"), "-q"])
    assert r.exit_code == 2
    assert "is not UTF-8 text (byte 10 is b'\\xff'); save it as UTF-8" in one_error_line(r.stderr)


def test_toml_and_json_space_files_are_checked_alike(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('resolution = 16\nstages = [[8, 1, 3]]\n')
    (tmp_path / "s.json").write_text('{"resolution": 16, "stages": [[8, 1, 3]]}')
    for name in ("s.toml", "s.json"):
        with pytest.raises(PipelineError, match=r"stages\.0\.stride = 3: expected 1 or 2"):
            resolve_space(str(tmp_path / name))
    (tmp_path / "bad.toml").write_text("resolution = \n")
    with pytest.raises(PipelineError, match="is not valid TOML"):
        resolve_space(str(tmp_path / "bad.toml"))


def test_bounds_admit_a_map_of_exactly_the_largest_size() -> None:
    big = {**VALID, "resolution": 1024, "stem_channels": 64, "stages": [[64, 1, 1], [256, 1, 2]]}
    assert space_from_dict(big, "x").layers[-1].key == "64x512x512-256-s2"  # 256 * 512 * 512 == 2**26
    with pytest.raises(PipelineError, match="a 257x512x512 feature map holds 67,371,008 values"):
        space_from_dict({**big, "stages": [[64, 1, 1], [257, 1, 2]]}, "x")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(VALID))
def test_mutated_space_files_give_a_space_or_one_line(tmp_path_factory: pytest.TempPathFactory, doc: object) -> None:
    f = tmp_path_factory.mktemp("space") / "s.yaml"
    f.write_text(yaml.safe_dump(doc))
    space = object_or_one_line(lambda: resolve_space(str(f)), f"search-space file '{f}'")
    assert space is None or (isinstance(space, SearchSpace) and space.layers)
