"""The README's Python example runs as written, in an empty folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section holds one example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    p = subprocess.run([sys.executable, "-c", _python_example()], cwd=tmp_path, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert re.fullmatch(r"\d+ rows timed into api-out/tables/tiny/desktop/host\.json", lines[0]), lines
    assert re.fullmatch(r"(\S+ ){6}\d+\.\d{4} ms predicted", lines[1]), lines
    assert re.fullmatch(r"api-out/export/tiny/desktop/host/model\.onnx \d+\.\d{4} ms measured", lines[2]), lines
    assert not p.stdout.count("\r")  # progress bars are off by default
