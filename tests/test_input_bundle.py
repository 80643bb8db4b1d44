"""Bad bundle results (the manifest.json and measurements.csv a user fills in): one line naming the
file and the field, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bundle import CSV_NAME, MANIFEST, Bundle, BundleNetwork, load_bundle, read_measurements
from core.errors import PipelineError
from tests.input_cases import files_under, mutated


def _bundle(folder: Path) -> Bundle:
    nets = tuple(BundleNetwork(f"net-{i:02d}", ("k3_e1", "skip"), "random", f"networks/net-{i:02d}.tflite", i < 2)
                 for i in range(3))
    return Bundle(folder, "android", "litert", "pixel1", "micro", "abc123", True, 1, 3, nets,
                  "pipeline validate --device pixel1", "validate", {"name": "litert"})


def _write(folder: Path, manifest: Any, csv_text: str = "network,ms\nnet-00,1.5\nnet-01,2.5\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / CSV_NAME).write_text(csv_text)
    return folder


def _manifest(**change: Any) -> Callable[[dict], None]:
    return lambda d: d.update(change)


BAD_MANIFESTS = [
    (_manifest(threads="1"), "threads = '1': expected an integer from 1 to 1024"),
    (_manifest(rounds=10**400), "rounds = <an integer of about 401 digits>: expected an integer"),
    (_manifest(kind="train"), "kind = 'train': expected one of 'validate' or 'benchmark'"),
    (_manifest(networks={}), "networks = {}: expected a list"),
    (_manifest(fit="yes"), "fit = 'yes': expected true or false"),
    (_manifest(colour="red"), "unknown key 'colour'; valid keys: command, device"),
    (lambda d: d["networks"][1].update(blocks="k3_e1"), "networks.1.blocks = 'k3_e1': expected a list"),
    (lambda d: d["networks"][0].pop("name"), "networks.0.name is missing: it is required"),
    (lambda d: d.pop("target"), "target is missing: it is required"),
]


@pytest.mark.parametrize("mutate,message", BAD_MANIFESTS, ids=[m[:40] for _, m in BAD_MANIFESTS])
def test_bad_manifest_is_one_line(tmp_path: Path, mutate: Callable[[dict], None], message: str) -> None:
    d = _bundle(tmp_path).to_dict()
    mutate(d)
    folder = _write(tmp_path / "bundle", d)
    before = files_under(folder)
    with pytest.raises(PipelineError) as e:
        load_bundle(folder)
    assert "\n" not in str(e.value) and f"bundle manifest '{folder / MANIFEST}'" in str(e.value)
    assert message in str(e.value), str(e.value)
    assert files_under(folder) == before


BAD_TIMES = [
    ("net-00,1e308\n", ":2: ms = 1e+308: expected milliseconds per inference above 0 and below 1,000,000"),
    ("net-00,nan\n", ":2: ms = nan: expected milliseconds per inference"),
    ("net-00,-1.5\n", ":2: ms = -1.5: expected milliseconds per inference above 0"),
    ("net-00,0\n", ":2: ms = 0.0: expected milliseconds per inference above 0"),
    ("net-00,fast\n", ":2: 'fast' is not a number of milliseconds"),
    ("net-00,1,5\n", ":2: a row is 'network,ms' (two fields"),
    ("net-09,1.5\n", ":2: network 'net-09' is not in the bundle"),
]


@pytest.mark.parametrize("rows,message", BAD_TIMES, ids=[m[:40] for _, m in BAD_TIMES])
def test_bad_measurements_are_one_line(tmp_path: Path, rows: str, message: str) -> None:
    folder = _write(tmp_path / "bundle", _bundle(tmp_path / "bundle").to_dict(), "network,ms\n" + rows)
    with pytest.raises(PipelineError) as e:
        read_measurements(folder / CSV_NAME, load_bundle(folder))
    assert "\n" not in str(e.value) and f"{folder / CSV_NAME}{message}" in str(e.value), str(e.value)


def test_measurements_that_are_not_utf8(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bundle", _bundle(tmp_path / "bundle").to_dict())
    (folder / CSV_NAME).write_bytes(b"network,ms\nnet-00,1.5\xff\n")
    with pytest.raises(PipelineError, match="is not a readable CSV .*; save it as UTF-8 text"):
        read_measurements(folder / CSV_NAME, load_bundle(folder))


def test_good_bundle_reads_back(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bundle", _bundle(tmp_path / "bundle").to_dict())
    b = load_bundle(folder)
    assert b == _bundle(folder)
    assert read_measurements(folder / CSV_NAME, b) == {"net-00": [1.5], "net-01": [2.5]}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(_bundle(Path("bundle")).to_dict()))
def test_mutated_manifests_give_a_bundle_or_one_line(tmp_path_factory: pytest.TempPathFactory, doc: Any) -> None:
    folder = _write(tmp_path_factory.mktemp("b") / "bundle", doc)
    try:
        assert isinstance(load_bundle(folder), Bundle)
    except PipelineError as e:
        assert "\n" not in str(e), str(e)


CELLS = st.one_of(st.text(max_size=12).filter(lambda t: "\n" not in t and "\r" not in t),
                  st.sampled_from(["1e308", "nan", "inf", "-1", "0", "1e-400", "1_000", "1,5", "\"2.5\"", "2.5 ms"]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["net-00", "net-01", "net-02", "net-9", ""]), CELLS), max_size=4))
def test_any_csv_rows_give_times_or_one_line(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    folder = tmp_path_factory.mktemp("b") / "bundle"
    _write(folder, _bundle(folder).to_dict(), "network,ms\n" + "".join(f"{n},{ms}\n" for n, ms in rows))
    try:
        times = read_measurements(folder / CSV_NAME, load_bundle(folder))
    except PipelineError as e:
        assert "\n" not in str(e), str(e)
    else:
        assert all(0 < t < 1e6 for ts in times.values() for t in ts)
