"""The dependency order in pyproject.toml holds (import-linter), the README states the same
line, and importing a low layer does not pull in the stages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> dict[str, dict]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in cfg["contracts"]}


def test_import_linter_contracts_are_kept():
    linter = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "2 kept, 0 broken" in p.stdout


def test_contract_has_no_exceptions_and_matches_the_readme():
    contracts = _contracts()
    layers = contracts["layers"]
    assert "ignore_imports" not in layers and "ignore_imports" not in contracts["acyclic"]
    # The README's design line names the layers lowest first; the contract lists them highest first.
    order = " → ".join(layer.split(" | ")[0].rsplit(".", 1)[0] if "|" in layer else layer
                       for layer in reversed(layers["layers"]))
    assert f"`{order}`" in (ROOT / "README.md").read_text()


def test_a_low_layer_does_not_import_the_stages():
    code = ("import sys, blocks, export, benchmarks, core, pipeline, pipeline.training.loop; "
            "print(sorted(m for m in sys.modules if m.startswith(('pipeline.stages', 'pipeline.cli', 'pipeline.flow'))))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_the_facade_loads_a_stage_on_first_use():
    code = "import pipeline; f = pipeline.validate; print(f.__module__)"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "pipeline.api"
