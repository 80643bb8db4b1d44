"""Every input kind a user gives the tool, fuzzed: generated documents near the valid ones give
either a valid object (which then round-trips, its latencies finite and below MAX_MS) or one
PipelineError line, never another exception.

The per-kind files (tests/test_input_*.py) mutate parsed documents field by field; this one
also breaks the bytes (truncated, re-encoded, binary junk), the syntax (YAML aliases that
explode or refer to themselves, nesting deeper than a parser's stack, a megabyte string, a
format in another's file name) and covers the kinds they do not: search configs, architecture
files, device files, a benchmark bundle's times, device-tool logs, --sweep and agent options.
Every kind is read by the function the CLI calls; `test_the_cli_reads_each_kind_as_its_loader`
runs the real commands over a sample, and the 1e308 ms case goes through `pipeline validate`.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.agent.client import Remote, read_token, remote_from_file
from benchmarks.agent.server import parse_backend_options
from benchmarks.bundle import CSV_NAME, LOGS, MANIFEST, Bundle, BundleNetwork, load_bundle, read_measurements, \
    table_from_measurements
from benchmarks.importers import import_table
from benchmarks.table import LatencyTable, load_table, required_rows, row_key
from benchmarks.targets import Target, parse_options, resolve_target
from blocks.architecture import Architecture, load_architecture
from blocks.space import SearchSpace, resolve_space, space_from_dict
from core.config import MAX_MS, build_config
from core.errors import PipelineError
from core.fileio import read_config
from pipeline.training.data import ImageFolderDataset
from pipeline.training.search import SearchConfig
from pipeline.training.sweep import parse_sweep
from tests.conftest import MICRO_SPACE, make_table
from tests.input_cases import cli_error, files_under, mutated, object_or_one_line
from tests.test_import import MINI_SPACE
from tests.test_input_import import VALID as LUT_VALID
from tests.test_input_target import VALID as TARGET_VALID
from tests.test_validate_device import BENCHMARK_MODEL_LOG, write_bundle

MICRO = space_from_dict(yaml.safe_load(MICRO_SPACE), "micro")
MINI = space_from_dict(yaml.safe_load(MINI_SPACE), "mini")
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------------- what breaks a file
HOLE = "__fuzz_hole__"  # a value's place in a serialized document, filled with raw syntax below
# Raw values no serializer writes: each in the syntax of both YAML and JSON where it exists.
RAW_VALUES = {
    "yaml": [
        # 9**8 leaves from 70 lines: what walks or prints the whole value never ends
        "[" + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}' if i else '1'] * 9)}]" for i in range(8)) + "]",
        "&self [*self]",  # a list that holds itself
        "{a: &m {b: 1}, <<: *m}", "!!binary aGVsbG8=", "!!set {a, b}", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
        "!!float .nan", ".inf", "-.inf", "0x1F", "0o17", "1_000", "yes", "~", '"\\u202e\\0"', "1e308", "-0.0",
    ],
    "json": ["1e999", "-1e999", "NaN", "Infinity", "1e308", "-0.0", "9" * 5000, "1" * 4000, '"\\ud800"',
             '"\\u0000"', "0.1e-400"],
    "both": ["[" * 5000 + "]" * 5000, '"' + "x" * 1_000_000 + '"', "{}", "[]", '""', "null", "true"],
}


def _dump(doc: Any, fmt: str) -> str:
    return json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc, allow_unicode=True)


@st.composite
def raw_filled(draw: st.DrawFn, valid: Any, fmt: str) -> str:
    """`valid` in `fmt`, one of its values (or a key's value) replaced by raw syntax."""
    doc = draw(mutated(valid, 1).filter(lambda d: isinstance(d, (dict, list)) and d))
    holder = draw(st.sampled_from(_containers(doc)))
    key = draw(st.sampled_from(list(holder) if isinstance(holder, dict) else range(len(holder))))
    holder[key] = HOLE
    raw = draw(st.sampled_from(RAW_VALUES[fmt] + RAW_VALUES["both"]))
    return _dump(doc, fmt).replace(json.dumps(HOLE) if fmt == "json" else HOLE, raw, 1)


def _containers(doc: Any) -> list[Any]:
    out = [doc] if doc else []
    for v in (doc.values() if isinstance(doc, dict) else doc):
        if isinstance(v, (dict, list)):
            out += _containers(v)
    return out


def broken_bytes(valid: str) -> st.SearchStrategy[bytes]:
    """A valid text's bytes truncated, re-encoded or with binary junk spliced in."""
    data = valid.encode()
    cut = st.integers(0, max(len(data) - 1, 0)).map(lambda n: data[:n])
    junk = st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=16)).map(
        lambda pj: data[:pj[0]] + pj[1] + data[pj[0]:])
    other = st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "cp1252"]).map(
        lambda enc: (valid + "# é\n").encode(enc, errors="replace"))
    return st.one_of(cut, junk, other, st.binary(max_size=64))


def documents(valid: Any, formats: tuple[str, ...] = ("json", "yaml")) -> st.SearchStrategy[bytes]:
    """Files near `valid`: a field changed, raw syntax in a value, broken bytes; in every format."""
    def fmt_of(f: str) -> st.SearchStrategy[bytes]:
        return st.one_of(mutated(valid).map(lambda d: _dump(d, f).encode()),
                         raw_filled(valid, f).map(str.encode), broken_bytes(_dump(valid, f)))
    return st.one_of(st.just(_dump(valid, formats[0]).encode()), *(fmt_of(f) for f in formats))


def edited_text(valid: str, specials: list[str]) -> st.SearchStrategy[str]:
    """A one-line input (a flag's value, a CSV cell) with a piece replaced by a special or any text."""
    piece = st.one_of(st.sampled_from(specials), st.text(max_size=12))

    @st.composite
    def edit(draw: st.DrawFn) -> str:
        i = draw(st.integers(0, len(valid)))
        j = draw(st.integers(i, min(len(valid), i + 8)))
        return valid[:i] + draw(piece) + valid[j:]
    return st.one_of(st.just(valid), edit(), piece)


TOML_SPECIALS = ["nan", "inf", "-inf", "1e308", "-0.0", "0x10", "1_000", "9" * 30, '"x"', "[", "]", "{", "=", "\n",
                 "[[stages]]", "[stages]", "'''", '"""', "1979-05-27T07:32:00Z", "true", "a.b = 1", "\x00", "é"]


def toml_documents(valid: str) -> st.SearchStrategy[bytes]:
    """A TOML file written out by hand, a piece replaced by TOML syntax or any text, or its bytes broken."""
    return st.one_of(st.just(valid.encode()), edited_text(valid, TOML_SPECIALS).map(str.encode), broken_bytes(valid))


SPACE_TOML = """\
name = "micro"
resolution = 16
in_channels = 1
num_classes = 10
stem_channels = 8
stem_stride = 2
stages = [[8, 1, 1], [16, 2, 2]]
head_channels = 32
blocks = ["k3_e1", "k3_e6", "k5_e3", "skip"]
"""
CONFIG_TOML = """\
epochs = 3
warmup_epochs = 1
loss = "add"
lam = 0.2
mixing = "gumbel"
temperature = 5.0
resolution = 16
"""
NUMBERS = ["1e308", "-1e308", "nan", "inf", "-inf", "-0.0", "0", "1e-320", "9" * 400, "0x10", "1_0", "１", "٣"]


# ---------------------------------------------------------------------------- what a valid object is
def _finite_ms(ms: Any, what: str, zero_ok: bool = False) -> None:
    assert isinstance(ms, float) and math.isfinite(ms) and (0 <= ms if zero_ok else 0 < ms) and ms < MAX_MS, (what, ms)


def _table_holds(table: LatencyTable) -> None:
    """Every measured row finite, non-negative (a skip costs 0 ms) and below MAX_MS; the table
    written and read back is the same."""
    assert isinstance(table, LatencyTable)
    for r in table.rows.values():
        if r.status == "ok":
            _finite_ms(r.median_ms, r.key, zero_ok=True)
    again = _reread_table(table)
    assert {k: r.median_ms for k, r in again.rows.items()} == {k: r.median_ms for k, r in table.rows.items()}


def _reread_table(table: LatencyTable) -> LatencyTable:
    with tempfile.TemporaryDirectory() as d:
        table.save(Path(d) / "t.json")
        return load_table(Path(d) / "t.json")


def _space_holds(space: SearchSpace) -> None:
    assert isinstance(space, SearchSpace) and space.layers
    assert space_from_dict(space.to_dict(), "again").fingerprint == space.fingerprint


# ---------------------------------------------------------------------------- the kinds
@dataclass(frozen=True)
class Kind:
    """An input kind: its file name, what a file of it may be, how the CLI reads it, and what a
    valid result must satisfy."""

    name: str
    file: str
    files: st.SearchStrategy[bytes]
    load: Callable[[Path], Any]
    holds: Callable[[Any], None]
    starts: str | tuple[str, ...] = ""  # how its one-line error starts, where that is fixed
    examples: int = 60


def _search_config(path: Path) -> SearchConfig:
    return build_config(SearchConfig, read_config(path, "search config"), "search config")


def _config_holds(cfg: SearchConfig) -> None:
    assert isinstance(cfg, SearchConfig)
    numbers = [v for v in cfg.to_dict().values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers), cfg
    assert build_config(SearchConfig, cfg.to_dict(), "again") == cfg


def _arch_holds(arch: Architecture) -> None:
    assert isinstance(arch, Architecture) and len(arch.blocks) == len(arch.space.layers)
    assert all(isinstance(b, str) for b in arch.blocks)
    json.dumps(arch.to_dict(), allow_nan=True)  # it can be written back


def _target_holds(t: Target) -> None:
    assert isinstance(t, Target)
    assert t.tolerance is None or math.isfinite(t.tolerance.atol) and math.isfinite(t.tolerance.rtol)


def _device_holds(r: Remote) -> None:
    assert isinstance(r, Remote) and r.url.startswith(("http://", "https://")) and r.token and " " not in r.token
    assert "\n" not in r.url + (r.name or "")


def _bundle_holds(b: Bundle) -> None:
    assert isinstance(b, Bundle) and 1 <= b.threads and 1 <= b.rounds
    (b.folder / MANIFEST).write_text(json.dumps(b.to_dict()))
    assert load_bundle(b.folder) == b


CONFIG_VALID = {"epochs": 3, "warmup_epochs": 1, "batch_size": 32, "loss": "add", "lam": 0.2, "mixing": "gumbel",
                "temperature": 5.0, "theta_lr": 0.01, "seed": 1, "resolution": 16}
ARCH_VALID = Architecture(MICRO, ("k3_e1", "k5_e3", "skip"),
                          {"predicted_latency_ms": 3.1, "table": "t.json", "alpha": [{"k3_e1": 0.5}]}).to_dict()
TABLE_VALID = json.loads(make_table(MICRO).to_json())
DEVICE_VALID = {"url": "http://127.0.0.1:8470", "token_file": "token.txt", "agent_device": "local", "name": "phone",
                "ca": None}


def _token_holds(token: str) -> None:
    assert token and token.split() == [token], token


def _device_file(path: Path) -> Remote:
    (path.parent / "token.txt").write_text("s3cret\n")
    return remote_from_file(path)


# ---------------------------------------------------------------------------- bundles: a manifest and its times
def _validate_bundle(folder: Path, runner: str = "onnxruntime") -> Bundle:
    nets = tuple(BundleNetwork(f"net-{i:02d}", ("k3_e1", "k5_e3", "skip"), "random", f"networks/net-{i:02d}.onnx",
                               i % 2 == 0) for i in range(3))
    return Bundle(folder, "desktop", runner, "laptop", "micro", MICRO.fingerprint, True, 1, 3, nets,
                  "pipeline validate --device laptop", "validate", {"name": "onnx", "format": "onnx", "opset": 17})


def _benchmark_bundle(folder: Path) -> Bundle:
    nets = tuple(BundleNetwork(f"block-{i:03d}", (block,), shape.key, f"blocks/block-{i:03d}.onnx", False,
                               row_key(block, shape)) for i, (block, shape) in enumerate(required_rows(MICRO)))
    return Bundle(folder, "desktop", "onnxruntime", "laptop", "micro", MICRO.fingerprint, False, 1, 3, nets,
                  "pipeline benchmark import", "benchmark", {"name": "onnx", "format": "onnx", "opset": 17})


def _times_hold(times: dict[str, list[float]]) -> None:
    assert times
    for name, mss in times.items():
        for ms in mss:
            _finite_ms(ms, name)


def _with_manifest(bundle: Bundle) -> Bundle:
    (bundle.folder / MANIFEST).write_text(json.dumps(bundle.to_dict()))
    return bundle


def _benchmark_table(manifest: Path) -> LatencyTable:
    """`pipeline benchmark import BUNDLE/measurements.csv` with every block timed."""
    b = _benchmark_bundle(manifest.parent)
    (b.folder / CSV_NAME).write_text("block,ms\n" + "".join(f"{n.name},{0.5 + i / 10}\n" for i, n in enumerate(b.networks)))
    return table_from_measurements(b.folder / CSV_NAME, MICRO, resolve_target("desktop"), "laptop")


def _benchmark_csv(path: Path) -> LatencyTable:
    _with_manifest(_benchmark_bundle(path.parent))
    return table_from_measurements(path, MICRO, resolve_target("desktop"), "laptop")


def _validate_manifest(manifest: Path) -> Bundle:
    """The bundle, and its times read back (the networks they name come from the manifest)."""
    b = load_bundle(manifest.parent)
    (b.folder / CSV_NAME).write_text("network,ms\n" + "".join(f"{n.name},{i + 1.5}\n" for i, n in enumerate(b.networks)))
    _times_hold(read_measurements(b.folder / CSV_NAME, b))
    return b


def filled(text: str, piece: str, template: str) -> st.SearchStrategy[bytes]:
    """`text` with `piece` replaced by `template` filled with numbers as a log may print them."""
    number = st.one_of(st.sampled_from(["0", *NUMBERS]), st.integers(-1, 10**12).map(str), st.floats().map(repr))
    n = template.count("{}")
    return st.lists(number, min_size=n, max_size=n).map(lambda v: text.replace(piece, template.format(*v)).encode())


EXECUTOR_RUNNER_LOG = "I 00:00:01 executor_runner.cpp:190] Model executed successfully 50 time(s) in 612.500000 ms.\n"
VALIDATE_CSV = "network,ms\n# two rounds\nnet-00,1.5\nnet-01,2.5\nnet-02,\nnet-00,1.6\n"
BENCHMARK_CSV = "block,ms\n" + "".join(f"block-{i:03d},{0.5 + i / 10}\n" for i in range(len(required_rows(MICRO))))
CELLS = NUMBERS + [",", "\n", "\r", '"', "#", "net-09", "\x00", "\ufeff", "ms", "1.5 ms", "x" * 200_000]

def _png(width: int, height: int, data: bytes = b"\x00" * 9) -> bytes:
    """A grey PNG that says it is `width` x `height` (its pixel data may say otherwise)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


VALID_PNG = _png(2, 2, b"\x00\x10\x20\x00\x30\x40")
# A header's size: small, or past Pillow's limit (a decompression bomb) on both sides. Not in
# between, nor junk spliced into the header: Pillow allocates an image of up to its limit (179
# million pixels) before it finds the data short, and a width with no height allocates its width.
SMALL, HUGE = st.integers(1, 64), st.integers(13_400, 2**31 - 1)
PNGS = st.one_of(st.just(VALID_PNG), st.integers(0, len(VALID_PNG) - 1).map(lambda n: VALID_PNG[:n]),
                 st.binary(max_size=64), st.tuples(SMALL, SMALL).map(lambda wh: _png(*wh)),
                 st.tuples(HUGE, HUGE).map(lambda wh: _png(*wh)))


def _image(path: Path) -> tuple[Any, Any]:
    """One image of `--data DIR` (two classes), decoded as training does."""
    (path.parent.parent / "b").mkdir(exist_ok=True)
    (path.parent.parent / "b" / "0.png").write_bytes(VALID_PNG)
    return ImageFolderDataset(path.parent.parent, 16, 1)[0]


def _image_holds(item: tuple[Any, Any]) -> None:
    x, label = item
    assert tuple(x.shape) == (1, 16, 16) and int(label) == 0 and bool(x.isfinite().all())


# A search config's values are checked after the flags merge in (so its errors name the key, not
# the file), and SearchConfig's own checks and the registries word theirs: no common start.
KINDS = [
    Kind("space", "s.yaml", st.one_of(documents(yaml.safe_load(MICRO_SPACE)), st.just(SPACE_TOML.encode())),
         lambda p: resolve_space(str(p)), _space_holds, "search-space file"),
    Kind("space-json", "s.json", documents(yaml.safe_load(MICRO_SPACE), ("yaml", "json")),
         lambda p: resolve_space(str(p)), _space_holds, "search-space file", 20),
    Kind("space-toml", "s.toml", toml_documents(SPACE_TOML), lambda p: resolve_space(str(p)), _space_holds,
         "search-space file", 40),
    Kind("target", "t.yaml", documents(TARGET_VALID), lambda p: resolve_target(str(p)), _target_holds, "target file"),
    Kind("search-config", "c.yaml", documents(CONFIG_VALID), _search_config, _config_holds, ""),
    Kind("search-config-toml", "c.toml", toml_documents(CONFIG_TOML), _search_config, _config_holds, "", 40),
    Kind("search-config-json", "c.json", documents(CONFIG_VALID, ("json",)), _search_config, _config_holds, "",
         20),
    Kind("architecture", "a.json", documents(ARCH_VALID, ("json",)), lambda p: load_architecture(p, MICRO),
         _arch_holds),
    Kind("table", "t.json", documents(TABLE_VALID, ("json",)), load_table, _table_holds),
    Kind("import-lut", "lut.yaml", documents(LUT_VALID, ("yaml",)),
         lambda p: import_table(p, "android", "pixel1", MINI), _table_holds),
    Kind("import-own-table", "own.json", documents(TABLE_VALID, ("json",)),
         lambda p: import_table(p, "desktop", "laptop", MICRO), _table_holds, examples=40),
    Kind("device-file", "phone.yaml", documents(DEVICE_VALID), _device_file, _device_holds, ("device file", "token file")),
    Kind("image", "data/a/0.png", PNGS, _image, _image_holds, "cannot read image", 40),
    Kind("token-file", "token.txt", broken_bytes("s3cret\n"), read_token, _token_holds, "token file", 20),
    Kind("validate-manifest", f"bundle/{MANIFEST}", documents(_validate_bundle(Path("b")).to_dict(), ("json",)),
         _validate_manifest, _bundle_holds),
    Kind("benchmark-manifest", f"bundle/{MANIFEST}", documents(_benchmark_bundle(Path("b")).to_dict(), ("json",)),
         _benchmark_table, _table_holds, examples=40),
    Kind("validate-csv", f"bundle/{CSV_NAME}",
         st.one_of(edited_text(VALIDATE_CSV, CELLS).map(str.encode), broken_bytes(VALIDATE_CSV)),
         lambda p: read_measurements(p, _with_manifest(_validate_bundle(p.parent))), _times_hold),
    Kind("benchmark-csv", f"bundle/{CSV_NAME}",
         st.one_of(edited_text(BENCHMARK_CSV, CELLS).map(str.encode), broken_bytes(BENCHMARK_CSV)),
         _benchmark_csv, _table_holds, examples=40),
    Kind("benchmark_model-log", f"bundle/{LOGS}/net-00.r0.log",
         st.one_of(edited_text(BENCHMARK_MODEL_LOG, CELLS + ["median=", "count=9", "Inference (avg): "]).map(str.encode),
                   filled(BENCHMARK_MODEL_LOG, "median=51891", "median={}"),
                   filled(BENCHMARK_MODEL_LOG, "Inference (avg): 63743.2", "Inference (avg): {}"),
                   broken_bytes(BENCHMARK_MODEL_LOG)),
         lambda p: read_measurements(p.parent, _with_manifest(_validate_bundle(p.parent.parent, "litert"))),
         _times_hold),
    Kind("executor_runner-log", f"bundle/{LOGS}/net-00.r0.log",
         st.one_of(edited_text(EXECUTOR_RUNNER_LOG, CELLS).map(str.encode), broken_bytes(EXECUTOR_RUNNER_LOG),
                   filled(EXECUTOR_RUNNER_LOG, "50 time(s) in 612.500000", "{} time(s) in {}")),
         lambda p: read_measurements(p.parent, _with_manifest(_validate_bundle(p.parent.parent, "executorch"))),
         _times_hold),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_any_file_of_a_kind_gives_an_object_or_one_line(kind: Kind, tmp_path_factory: pytest.TempPathFactory) -> None:
    @settings(FUZZ, max_examples=kind.examples)
    @given(kind.files)
    def check(data: bytes) -> None:
        path = tmp_path_factory.mktemp(kind.name) / kind.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        got = object_or_one_line(lambda: kind.load(path), kind.starts)
        if got is not None:
            kind.holds(got)

    check()


# ---------------------------------------------------------------------------- flags
def _sweep_holds(spec: Any) -> None:
    """At least two different values: latency targets in (0, MAX_MS) ms, λs finite and >= 0."""
    assert len(spec.values) >= 2 and len(set(spec.values)) == len(spec.values)
    for v in spec.values:
        assert math.isfinite(v) and (0 < v < MAX_MS if spec.param == "latency-target" else v >= 0), spec


def _options_hold(t: Target) -> None:
    assert isinstance(t, Target)
    for v in {**t.exporter_options, **t.runner_options}.values():
        assert isinstance(v, (str, int, float, bool)) and (not isinstance(v, float) or math.isfinite(v)), v


FLAG_SPECIALS = NUMBERS + ["=", ",", "\n", "[1", "{a: 1}", "!!python/name:os.system", "&a [*a]", "'", "\x00", "é",
                           "latency-target", "latency_target", " ", "x" * 100_000]
FLAGS = [
    ("--sweep", edited_text("lam=0.01,0.1,1", FLAG_SPECIALS), parse_sweep, _sweep_holds, "--sweep"),
    ("-o", st.lists(edited_text("opset=17", FLAG_SPECIALS), min_size=1, max_size=3),
     lambda pairs: resolve_target("desktop", parse_options(tuple(pairs))), _options_hold, ""),
    ("--backend-option", st.lists(edited_text("adb.serial=R58M12345", FLAG_SPECIALS), min_size=1, max_size=2),
     parse_backend_options, lambda d: all(isinstance(v, dict) for v in d.values()), "--backend-option"),
]


@pytest.mark.parametrize("flag,values,parse,holds,starts", FLAGS, ids=[f[0] for f in FLAGS])
def test_any_flag_value_gives_an_object_or_one_line(flag: str, values: st.SearchStrategy, parse: Callable,
                                                   holds: Callable, starts: str) -> None:
    @settings(FUZZ, max_examples=150)
    @given(values)
    def check(value: Any) -> None:
        got = object_or_one_line(lambda: parse(value), starts)
        if got is not None:
            holds(got)

    check()


# ---------------------------------------------------------------------------- the CLI reads each kind the same way
def _broken(valid: Any, fmt: str) -> list[bytes]:
    """Two files of `valid` no loader accepts: UTF-16 bytes, and (YAML) an alias bomb or (JSON) a
    value nested past the parser's stack in its first value."""
    def first_value_is(raw: str) -> bytes:
        doc = json.loads(json.dumps(valid))
        doc[next(iter(doc))] = HOLE
        return _dump(doc, fmt).replace(json.dumps(HOLE) if fmt == "json" else HOLE, raw, 1).encode()
    return [_dump(valid, fmt).encode("utf-16"), first_value_is(RAW_VALUES["yaml"][0] if fmt == "yaml" else
                                                               "[" * 5000 + "]" * 5000)]


CLI = [  # kind, file, valid document, format, the command that reads it ({F}: the file, {M}: the micro space)
    ("space", "s.yaml", yaml.safe_load(MICRO_SPACE), "yaml", "benchmark --target desktop --space {F} -q"),
    ("target", "t.yaml", TARGET_VALID, "yaml", "benchmark --target {F} --space {M} -q"),
    ("search-config", "c.yaml", CONFIG_VALID, "yaml", "search --config {F} --space {M}"),
    ("architecture", "a.json", ARCH_VALID, "json", "train --arch {F} --space {M}"),
    ("table", "t.json", TABLE_VALID, "json", "search --table {F} --space {M} --epochs 1"),
    ("import", "lut.yaml", LUT_VALID, "yaml", "benchmark import {F} --target android --device pixel1 --space {M}"),
    ("device-file", "phone.yaml", DEVICE_VALID, "yaml", "benchmark --device {F} --space {M} -q"),
]


@pytest.mark.parametrize("kind,name,valid,fmt,command", CLI, ids=[c[0] for c in CLI])
def test_the_cli_reads_each_kind_as_its_loader(tmp_path: Path, micro_space_file: Path, kind: str, name: str,
                                               valid: Any, fmt: str, command: str) -> None:
    """Broken files of each kind through the real command: exit 2, one line naming the file, nothing written."""
    (tmp_path / "mini.yaml").write_text(MINI_SPACE)
    space = tmp_path / "mini.yaml" if kind == "import" else micro_space_file
    for i, data in enumerate(_broken(valid, fmt)):
        path = tmp_path / f"{i}" / name
        path.parent.mkdir()
        path.write_bytes(data)
        out = tmp_path / f"ws{i}"
        args = [a.format(F=path, M=space) for a in command.split()] + ["--out", str(out)]
        line = cli_error(args, out)
        # a config's values merge with the flags before they are checked: its errors name the key
        assert str(path) in line or kind == "search-config" and line.startswith("error: search config: "), (i, line)


@pytest.mark.slow
def test_a_latency_of_1e308_ms_brought_to_validate_is_one_line_and_writes_nothing(
        micro_space: SearchSpace, micro_space_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ws"
    made = json.loads(write_bundle(micro_space, micro_space_file, out, "desktop", "laptop", "--samples", "2", "--json"))
    csv = Path(made["bundle"]) / CSV_NAME
    csv.write_text("network,ms\nnet-00,1e308\nnet-01,2.5\n")
    before = {p: p.read_bytes() for p in files_under(out)}
    line = cli_error(["validate", "--space", str(micro_space_file), "--out", str(out), "--device", "laptop",
                      "--measurements", str(csv)], tmp_path / "nothing-here")
    assert f"{csv}:2: ms = 1e+308: expected milliseconds per inference above 0 and below 1,000,000" in line, line
    assert {p: p.read_bytes() for p in files_under(out)} == before


def test_a_message_looks_only_at_the_first_items_and_levels_of_a_value() -> None:
    """A YAML alias bomb is small in memory (each level is nine references to the one below); a
    message that printed it whole would take minutes, so it reads only a bounded part."""
    seen = []

    class Leaf:
        def __repr__(self) -> str:
            seen.append(1)
            return "leaf"

    bomb: Any = [Leaf()] * 9
    for _ in range(6):
        bomb = [bomb] * 9  # 9**7 leaves
    with pytest.raises(PipelineError) as e:
        space_from_dict({**yaml.safe_load(MICRO_SPACE), "stages": bomb}, "bomb")
    assert "\n" not in str(e.value) and "stages.0 = [[[[[...], [...], [...]" in str(e.value), str(e.value)
    assert len(seen) < 100
