"""Shared by the tests/test_input_*.py files: documents mutated from valid ones, and the checks
that a bad one gives the one-line error and writes nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from hypothesis import strategies as st

from core.errors import PipelineError

# What a mutation puts in place of a value: the types and extremes a hand-edited file holds.
VALUES = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, -1, 10**400, 2**63, 10**6 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0]),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
    st.none(),
    st.booleans(),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """The path of every value under `node` (mapping keys and list indices)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _at(doc: Any, path: Sequence) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: Any, max_changes: int = 2) -> Any:
    """`valid` with 1 to `max_changes` changes: a value replaced, a key or item dropped, or one added.
    Most results differ from a valid document in one field, so they reach field validation."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_changes))):
        paths = _paths(doc)
        if not paths:
            return doc
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if op == "replace":
            parent[key] = draw(VALUES)
        elif op == "drop":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return doc


def one_error_line(stderr: str) -> str:
    """The CLI's whole stderr must be exactly one `error: ...` line; returns it."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def cli_error(args: list[str], out: Path) -> str:
    """Run `pipeline ARGS`: it must exit 2 with one `error:` line and write nothing under `out`."""
    from click.testing import CliRunner

    from pipeline.cli import main

    r = CliRunner().invoke(main, args)
    line = one_error_line(r.stderr)
    assert r.exit_code == 2, r.output
    assert files_under(out) == []
    return line


T = TypeVar("T")


def object_or_one_line(load: Callable[[], T], starts: str = "") -> T | None:
    """What `load()` returns, or None where it refused the input with a one-line
    `PipelineError` (starting with `starts`); any other exception fails the test."""
    try:
        return load()
    except PipelineError as e:
        assert "\n" not in str(e) and str(e).startswith(starts), str(e)
        return None
