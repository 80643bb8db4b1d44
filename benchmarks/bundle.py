"""Timing on a device this machine is not: bundles of what to time there, and the times brought back.

A phone cannot be timed from here. `pipeline validate --device pixel1` draws the networks a
validate of that table would (seeded, so the same every time), and `pipeline benchmark --device
pixel1` takes every row the table needs; each is exported for the target and written into a
bundle folder with a manifest, a `measurements.csv` to fill in and, where the runtime has a
command-line timer that runs over adb, a script that times everything on the device with it
(LiteRT's `benchmark_model`, ExecuTorch's `executor_runner`) and keeps each run's log.
`pipeline validate --device pixel1 --measurements PATH` reads a validate bundle's times back and
fits and judges the calibration as a validate here does; `pipeline benchmark import PATH` makes
the device's latency table from a benchmark bundle's times.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from tqdm import tqdm

from benchmarks.boundary import NOOP_PARTS
from benchmarks.harness import BenchmarkJob, export_rows, row_module, rows_to_measure
from benchmarks.protocol import Protocol, Samples
from benchmarks.runners import RUNNERS, DeviceTool
from benchmarks.table import LatencyTable, Row, row_key
from blocks.architecture import Architecture
from blocks.space import LayerShape, SearchSpace
from core.config import MAX_MS, Input, int_in, number_in, short, validate
from core.errors import PipelineError
from core.fileio import atomic_dir, atomic_path, read_json, write_json_atomic, write_text_atomic
from benchmarks.targets import Target, require_exporter
from benchmarks.networks import export_architecture, verify_here
from core.workspace import Workspace

BUNDLE_FORMAT = "pipeline-device-bundle"  # validate's networks or a table's blocks
BUNDLE_VERSION = 1
MAX_THREADS = 1024  # runtime threads on any phone or desktop
MAX_ROUNDS = 1000  # rounds over a bundle's items
MANIFEST = "manifest.json"
CSV_NAME = "measurements.csv"
LOGS = "logs"
SCRIPT = "time_on_device.sh"
_LOG_NAME = re.compile(r"^(?P<net>(?:net|block)-\d+)\.r(?P<round>\d+)\.log$")
KINDS = {"validate": "network", "benchmark": "block"}  # what a bundle holds -> what its items are called
# Rounds over a table's blocks on a device: each run of benchmark_model is already >= 50 runs
# and 1 s, so 3 rounds (median of 3 outvotes one slow spell) keep FBNet's 123 rows near 10 min.
BLOCK_ROUNDS = 3  # what a bundle holds -> what its items are called


@dataclass(frozen=True)
class BundleNetwork:
    name: str  # what measurements call it: net-00, net-01, ...
    blocks: tuple[str, ...]
    origin: str  # "random" or the architecture file it came from
    file: str  # the exported network, relative to the bundle folder
    fits: bool  # the calibration is fitted on it; the others judge it
    row: str = ""  # in a benchmark bundle: the table row it times (blocks = (block,), origin = its shape key)


@dataclass(frozen=True)
class Bundle:
    folder: Path
    target: str
    runner: str
    device: str
    space: str
    space_fingerprint: str
    fit: bool  # the plan was to fit a new calibration (else to judge the table's)
    threads: int
    rounds: int
    networks: tuple[BundleNetwork, ...]
    # `pipeline validate` (or benchmark) as it was run to write the bundle (workspace, table,
    # target file and options, plugins), so the command that reads the times back works from
    # where it was run
    command: str = ""
    kind: str = "validate"  # or "benchmark": the blocks of a latency table
    # The exporter's name, format, options and versions: times are only good for the files timed.
    exporter: dict[str, Any] = field(default_factory=dict)

    @property
    def item(self) -> str:
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["folder"]
        d["networks"] = [{**asdict(n), "blocks": list(n.blocks)} for n in self.networks]
        return {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **d}


class NetworkInput(Input):
    name: str
    blocks: list[str]
    origin: str
    file: str
    fits: bool
    row: str = ""


class BundleInput(Input):
    """A bundle's manifest.json, as `Bundle.to_dict` writes it."""

    format: str
    version: int
    target: str
    runner: str
    device: str
    space: str
    space_fingerprint: str
    fit: bool
    threads: int_in(1, MAX_THREADS)  # type: ignore[valid-type]
    rounds: int_in(1, MAX_ROUNDS)  # type: ignore[valid-type]
    networks: Annotated[list[NetworkInput], Field(min_length=1)]
    command: str
    kind: Literal[tuple(KINDS)] = "validate"  # type: ignore[valid-type]
    exporter: dict[str, Any] = {}


class Measurement(Input):
    ms: number_in(0, MAX_MS, "milliseconds per inference", lo_open=True)  # type: ignore[valid-type]


def load_bundle(folder: Path) -> Bundle:
    """The bundle whose manifest is in `folder`; anything else is a one-line error."""
    path = folder / MANIFEST
    d = read_json(path, "validate bundle manifest")
    if not isinstance(d, dict) or d.get("format") != BUNDLE_FORMAT:
        raise PipelineError(f"'{path}' is not the manifest of a bundle this tool wrote; pass a bundle's "
                            f"{CSV_NAME} or {LOGS}/ folder")
    if d.get("version") != BUNDLE_VERSION:
        raise PipelineError(f"validate bundle '{path}' is version {d.get('version')}, this tool reads version "
                            f"{BUNDLE_VERSION}; write the bundle again with this version ('pipeline validate' or "
                            "'pipeline benchmark' with --device NAME)")
    m = validate(BundleInput, d, f"bundle manifest '{path}'", "restore it, or write the bundle again")
    nets = tuple(BundleNetwork(n.name, tuple(n.blocks), n.origin, n.file, n.fits, n.row) for n in m.networks)
    return Bundle(folder, m.target, m.runner, m.device, m.space, m.space_fingerprint, m.fit, m.threads, m.rounds, nets,
                  m.command, m.kind, m.exporter)


# ---------------------------------------------------------------------------- the tools that time on a device
def device_tool(runner: str) -> DeviceTool | None:
    """The runtime's own timer on a device (`Runner.device_tool`), or None where it has none."""
    return RUNNERS.get(runner).device_tool


def summary(b: Bundle) -> dict[str, Any]:
    """`--json` for a bundle (of `benchmark --device` or `validate --device`): what it holds and
    the command that reads its times back, as the text output prints them."""
    tool = device_tool(b.runner)
    times = b.folder / (LOGS if tool is not None else CSV_NAME)
    return {"bundle": str(b.folder), "kind": b.kind, "target": b.target, "device": b.device, "space": b.space,
            "networks": len(b.networks), "script": str(b.folder / SCRIPT) if tool is not None else None,
            "measurements": str(b.folder / CSV_NAME), "then": bundle_command(b, times)}


def _script(b: Bundle, tool: DeviceTool, then: str) -> str:
    names = " ".join(n.name for n in b.networks)
    suffixes = {Path(n.file).suffix for n in b.networks}
    (suffix,) = suffixes
    (local,) = {str(Path(n.file).parent) for n in b.networks}
    command = tool.command.replace("$MODEL", '$DIR/$n' + suffix)
    what = "networks" if b.kind == "validate" else "blocks"
    return f"""#!/bin/sh
# Time the {len(b.networks)} {what} of this bundle on an Android device ({b.device}) over adb with
# {tool.tool}.
# {tool.notes}.
# Rounds alternate direction, so none is always timed first or last; every run's log is
# kept in {LOGS}/ ({b.item}-N.rK.log), and a run whose log is already there is not repeated, so an
# interrupted run resumes where it stopped. Then, where this bundle was written:
#   {then}
#
# Settings (environment variables):
#   {tool.env}  the tool on the device [{tool.default_path}]
#   ROUNDS    rounds over all {what} [{b.rounds}]
#   THREADS   runtime threads, as the table was timed [{b.threads}]
#   TASKSET   a prefix that pins the tool to cores, e.g. "taskset f0" for the big cores []
#   COOLDOWN  seconds to rest between runs, against thermal throttling [1]
#   ADB       the adb command, e.g. "adb -s SERIAL" [adb]
set -eu
cd "$(dirname "$0")"
ADB=${{ADB:-adb}}
TOOL=${{{tool.env}:-{tool.default_path}}}
ROUNDS=${{ROUNDS:-{b.rounds}}}
THREADS=${{THREADS:-{b.threads}}}
TASKSET=${{TASKSET:-}}
COOLDOWN=${{COOLDOWN:-1}}
DIR=/data/local/tmp/pipeline-{b.kind}-{re.sub(r"[^A-Za-z0-9._-]", "_", b.device)}
NETS="{names}"
REVERSED=""
for n in $NETS; do REVERSED="$n $REVERSED"; done

mkdir -p {LOGS}
$ADB shell "test -x '$TOOL'" || {{ echo "no executable tool at $TOOL on the device: push it there (adb push TOOL $TOOL; adb shell chmod +x $TOOL) or set {tool.env}" >&2; exit 1; }}
$ADB shell mkdir -p "$DIR" >/dev/null
for n in $NETS; do
  $ADB push "{local}/$n{suffix}" "$DIR/$n{suffix}" >/dev/null
done
failed=0
r=0
while [ "$r" -lt "$ROUNDS" ]; do
  if [ $((r % 2)) -eq 0 ]; then order=$NETS; else order=$REVERSED; fi
  for n in $order; do
    log="{LOGS}/$n.r$r.log"
    [ -s "$log" ] && continue
    if $ADB shell "$TASKSET {command}" >"$log.tmp" 2>&1; then
      mv "$log.tmp" "$log"
    else
      echo "$n, round $r: the tool failed; its output is in $log.tmp" >&2
      failed=$((failed + 1))
    fi
    sleep "$COOLDOWN"
  done
  echo "round $((r + 1)) of $ROUNDS done" >&2
  r=$((r + 1))
done
$ADB shell rm -r "$DIR" >/dev/null || true
[ "$failed" -eq 0 ] || {{ echo "$failed run(s) failed (see {LOGS}/*.tmp); run this script again to retry them" >&2; exit 1; }}
"""


# ---------------------------------------------------------------------------- writing a bundle
def bundle_command(b: Bundle, measurements: Path) -> str:
    """The command that reads `measurements` back: validate judges them, benchmark import tables them."""
    option = "--measurements " if b.kind == "validate" else ""
    return f"{b.command} {option}{shlex.quote(str(measurements))}"


def write_bundle(archs: list[tuple[tuple[str, ...], str]], fit_idx: frozenset[int], fit: bool, space: SearchSpace,
                 command: str, target: Target, ws: Workspace, device: str, threads: int, rounds: int, folder: Path,
                 progress: bool = True) -> Bundle:
    """Export `archs` for `target` into `folder` with a manifest, a CSV to fill in and (where a
    device tool exists for the target's runtime) the script that times them over adb."""
    exporter = target.make_exporter()
    nets = tuple(BundleNetwork(f"net-{i:02d}", blocks, origin, f"networks/net-{i:02d}{exporter.suffix}", i in fit_idx)
                 for i, (blocks, origin) in enumerate(archs))
    b = Bundle(folder, target.name, target.runner, device, space.name, space.fingerprint, fit, threads, rounds, nets,
               command, "validate", _exporter_identity(exporter))
    _refuse_other_networks(b)
    files = {n.name: export_architecture(Architecture(space, n.blocks, {}), target, ws.cache)[0].path
             for n in tqdm(nets, desc=f"export {target.name}", unit="net", disable=not progress)}
    return _write(b, files)


def _write(b: Bundle, files: dict[str, Path]) -> Bundle:
    """The bundle's files: each item's artifact (`files`: name -> exported file), the device
    script where the runtime has a tool, the CSV to fill in, the README and, last, the manifest."""
    for n in b.networks:
        _copy(files[n.name], b.folder / n.file)
    tool = device_tool(b.runner)
    if tool is not None:
        write_text_atomic(b.folder / SCRIPT, _script(b, tool, bundle_command(b, b.folder / LOGS)))
        (b.folder / SCRIPT).chmod(0o755)
    csv_path = b.folder / CSV_NAME
    if not csv_path.exists():  # never over a file the user may have filled in
        write_text_atomic(csv_path, f"{b.item},ms\n" + "".join(f"{n.name},\n" for n in b.networks))
    write_text_atomic(b.folder / "README.txt", _readme(b, tool))
    write_json_atomic(b.folder / MANIFEST, b.to_dict())
    return b


def _exporter_identity(exporter: Any) -> dict[str, Any]:
    return {"name": exporter.name, "format": exporter.format, **exporter.fingerprint()}


def _refuse_other_networks(b: Bundle) -> None:
    """A bundle already in the folder of other files (networks, blocks, space, exporter options,
    threads) may hold their measurements, which the new files would inherit: keep it."""
    if not (b.folder / MANIFEST).exists():
        return
    try:
        old = load_bundle(b.folder)
    except PipelineError as e:
        raise PipelineError(f"{e} (to write a new bundle, move '{b.folder}' away first)") from None
    def same(x: Bundle) -> tuple:
        return ([(n.name, n.blocks, n.row) for n in x.networks], x.kind, x.space_fingerprint, x.threads, x.exporter)

    if same(old) != same(b):
        again = ", or pass another --seed" if b.kind == "validate" else ""
        raise PipelineError(f"'{b.folder}' holds a bundle of other {b.item}s, space, exporter options or threads "
                            f"(and maybe their measurements); move it away{again}")


def _copy(src: Path, dst: Path) -> None:
    """Hard-link `src` (from the export cache) into the bundle, else copy it: FBNet-sized
    networks are 10-20 MB each. A link is safe, since the cache replaces files, never edits them."""
    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system, or one without links
            shutil.copy2(a, b)

    if src.is_dir():  # a format whose artifact is a folder (a Core ML .mlpackage)
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, copy_function=link_or_copy)
    else:
        with atomic_path(dst) as tmp:
            tmp.unlink()
            link_or_copy(str(src), str(tmp))


def _readme(b: Bundle, tool: DeviceTool | None) -> str:
    what = "networks" if b.kind == "validate" else "blocks"
    if b.kind == "benchmark":
        role = f"each is one row of the {b.device} latency table ({MANIFEST} says which)"
    elif b.fit:
        n_fit = sum(n.fits for n in b.networks)
        role = f"{n_fit} of them fit a calibration of the {b.device} table, the other {len(b.networks) - n_fit} judge it"
    else:
        role = "they judge the table's prediction (no new fit)"
    runner = RUNNERS.get(b.runner)
    threads = f" with {b.threads} thread(s)" if runner.takes_threads else ""
    folder = Path(b.networks[0].file).parent if b.networks else "."
    parts = [f"{what.capitalize()} of space '{b.space}' exported for target '{b.target}', to time on device "
             f"'{b.device}'.\n{len(b.networks)} {what} in {folder}/; {role}.\n\n"
             f"Time each{threads}, several times (the median is taken), in rounds over all of them, with the\n"
             "device cool and idle. Run the commands below from the folder where 'pipeline' wrote this bundle.\n"]
    if tool is not None:
        parts.append(f"With {SCRIPT} (it needs adb and {tool.tool};\nits first lines list its settings), then:\n\n"
                     f"    {bundle_command(b, b.folder / LOGS)}\n")
    parts.append(f"{'Or time them with any tool you trust and write' if tool else 'Write'} one row per {b.item} and "
                 f"round into {CSV_NAME}\n({b.item},ms: milliseconds per inference, steady state), then:\n\n"
                 f"    {bundle_command(b, b.folder / CSV_NAME)}\n")
    if runner.manual_howto:
        parts.append(runner.manual_howto)
    return "\n".join(parts)


# ---------------------------------------------------------------------------- reading measurements
def bundle_folder(measurements: Path) -> Path:
    """The bundle a measurements file or logs folder belongs to: the folder with the manifest."""
    for folder in (measurements, measurements.parent):
        if folder.is_dir() and (folder / MANIFEST).is_file():
            return folder
    raise PipelineError(f"no {MANIFEST} beside '{measurements}'; pass the {CSV_NAME} or the {LOGS}/ folder of a "
                        "bundle that 'pipeline validate --device NAME' (or benchmark) wrote")


def is_bundle_measurements(path: Path) -> bool:
    """Is `path` a bundle's logs folder or CSV (rather than a table file)?"""
    return path.is_dir() or path.suffix == ".csv" and (path.parent / MANIFEST).is_file()


def read_measurements(path: Path, b: Bundle) -> dict[str, list[float]]:
    """Each network's measured ms, one per round, from a CSV (network,ms) or a folder of logs
    of the target's device tool. Networks without any are absent."""
    if not path.exists():
        hint = f"run {b.folder / SCRIPT} with the device attached first" if path.name == LOGS else "check the path"
        raise PipelineError(f"measurements '{path}' do not exist; {hint}")
    known = {n.name for n in b.networks}
    out: dict[str, list[float]] = {}
    rows = _read_logs(path, b) if path.is_dir() else _read_csv(path, b.item)
    for name, ms, where in rows:
        if name not in known:
            raise PipelineError(f"{where}: {b.item} {short(name)} is not in the bundle (it has {b.networks[0].name} to "
                                f"{b.networks[-1].name}); these measurements belong to another bundle")
        ms = validate(Measurement, {"ms": ms}, where, "give milliseconds per inference (a decimal point, no unit)").ms
        out.setdefault(name, []).append(ms)
    if not out:
        raise PipelineError(f"'{path}' holds no measurements yet; time the {b.item}s first (see "
                            f"{b.folder / 'README.txt'})")
    return out


def _read_csv(path: Path, item: str) -> list[tuple[str, float, str]]:
    rows = []
    try:
        # utf-8-sig: spreadsheets write a byte-order mark; comment lines are blanked, not
        # dropped, so that line numbers in messages are the file's
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader("\n" if line.lstrip().startswith("#") else line for line in f)
            header = next((r for r in reader if r), None)
            if header is None or [h.strip() for h in header] != [item, "ms"]:
                raise PipelineError(f"{path}: the first line must be the header '{item},ms'")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                cells = [c.strip() for c in row]
                if not any(cells) or len(cells) == 2 and not cells[1]:
                    continue  # blank, or a network not timed (yet): the template lists every one
                if len(cells) != 2:
                    raise PipelineError(f"{where}: a row is '{item},ms' (two fields, a decimal point, no comma in "
                                        f"the number), not {short(','.join(row))}")
                try:
                    ms = float(cells[1])
                except ValueError:
                    raise PipelineError(f"{where}: {short(cells[1])} is not a number of milliseconds") from None
                rows.append((cells[0], ms, where))
    except (UnicodeDecodeError, csv.Error) as e:
        raise PipelineError(f"{path} is not a readable CSV ({e}); save it as UTF-8 text") from None
    return rows


def _read_logs(folder: Path, b: Bundle) -> list[tuple[str, float, str]]:
    tool = device_tool(b.runner)
    if tool is None:
        raise PipelineError(f"'{folder}' is a folder, but target '{b.target}' has no device tool whose logs this "
                            f"tool reads; write the times into {b.folder / CSV_NAME} and pass that")
    rows = []
    # not a failed run's .tmp, nor a folder that happens to have a log's name
    logs = [(m, p) for p in folder.iterdir() if (m := _LOG_NAME.match(p.name)) and p.is_file()]
    for m, log in sorted(logs, key=lambda mp: (mp[0]["net"], int(mp[0]["round"]))):  # r10 after r2
        try:
            ms = tool.parse(log.read_text(errors="replace"))
        except ValueError as e:
            raise PipelineError(f"{log}: {e}; delete it and run {SCRIPT} again to re-time that run") from None
        rows.append((m["net"], ms, str(log)))
    return rows


# ---------------------------------------------------------------------------- a latency table timed on the device
def prepare_blocks(space: SearchSpace, command: str, target: Target, ws: Workspace, device: str, threads: int,
                   rounds: int, jobs: int = 1, progress: bool = True) -> Bundle:
    """`pipeline benchmark --device NAME`: every row the table needs, exported (and checked
    against PyTorch where the runtime runs here), in a bundle to time on the device."""
    require_exporter(target)
    exporter = target.make_exporter()
    job = BenchmarkJob(space, exporter, None, target.tolerance_for(exporter), Protocol(threads=threads),
                       ws.table(space.name, target.name, device), ws.cache, jobs=jobs)
    rows = rows_to_measure(space, exporter)
    artifacts = export_rows(job, rows, progress)
    # Before anyone times anything on the phone: a row the format cannot express leaves the
    # table unusable (a no-op row only prices identities, and predictions do without it).
    missing = [f"{row_key(b, s)} ({artifacts[row_key(b, s)]})" for b, s in rows
               if isinstance(artifacts[row_key(b, s)], str) and b not in NOOP_PARTS]
    if missing:
        raise PipelineError(f"{exporter.format} cannot express {len(missing)} block(s) of '{space.name}', so no table "
                            f"for it can be timed: {missing[0]}; pick a space without it or another target")
    items, files = [], {}
    for block, shape in rows:
        artifact = artifacts[row_key(block, shape)]
        if isinstance(artifact, str):
            continue
        verify_here(target, exporter, *row_module(block, shape), artifact, f"{row_key(block, shape)} ({exporter.format})")
        name = f"block-{len(items):03d}"
        items.append(BundleNetwork(name, (block,), shape.key, f"blocks/{name}{exporter.suffix}", False,
                                   row_key(block, shape)))
        files[name] = artifact.path
    b = Bundle(ws.root / "benchmark" / space.name / target.name / device / "bundle", target.name, target.runner, device,
               space.name, space.fingerprint, False, threads, rounds, tuple(items), command, "benchmark",
               _exporter_identity(exporter))
    _refuse_other_networks(b)
    return _write(b, files)


def table_from_measurements(measurements: Path, space: SearchSpace, target: Target, device: str) -> LatencyTable:
    """`pipeline benchmark import BUNDLE/logs`: the device's latency table from the times of a
    benchmark bundle, every row the median of its rounds with their spread."""
    b = open_bundle(measurements, target, device, space, "benchmark")
    times = read_measurements(measurements, b)
    untimed = [f"{n.name} ({n.row})" for n in b.networks if n.name not in times]
    if untimed:
        raise PipelineError(f"{len(untimed)} of the {len(b.networks)} blocks have no time yet ({', '.join(untimed[:3])}"
                            f"{', ...' if len(untimed) > 3 else ''}); time them (run {SCRIPT} again) or write them "
                            f"into {b.folder / CSV_NAME}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tool = device_tool(b.runner)
    exp = b.exporter
    table = LatencyTable({"target": target.name, "device": device, "unit": "ms", "threads": b.threads,
                          "space": space.name, "space_fingerprint": space.fingerprint, "block_set": list(space.blocks),
                          "runtime": target.runner_class().runtime, "exporter": exp.get("name"),
                          "format": exp.get("format"), "exporter_options": {k: v for k, v in exp.items()
                                                                            if k not in ("name", "format")},
                          "imported_from": {"file": str(measurements), "bundle": str(b.folder.resolve())},
                          "source": (f"timed on {device} with {tool.name}" if tool and measurements.is_dir()
                                     else f"times written into {measurements.name}"),
                          "statistic": "median of the rounds", "imported": now, "created": now, "updated": now})
    for n in b.networks:
        ms = times[n.name]
        stats = {k: v for k, v in Samples(tuple(ms), 1, 0.0, ms[0]).stats().items()
                 if k not in ("median_ms", "number", "load_ms", "first_ms")}  # the device tool times those itself
        table.add(Row(*_block_at(n, b), "ok", float(np.median(ms)), stats))
    table.check_fits(space)
    return table


def _block_at(n: BundleNetwork, b: Bundle) -> tuple[str, LayerShape]:
    """The block a benchmark bundle's item times, and the layer shape it is timed at."""
    try:
        (block,) = n.blocks
        return block, LayerShape.from_key(n.origin)
    except ValueError:
        raise PipelineError(f"bundle manifest '{b.folder / MANIFEST}': {n.name} has blocks {short(list(n.blocks))} "
                            f"and origin {short(n.origin)}, not one block and its layer shape (CINxHxW-COUT-sSTRIDE); "
                            "restore it, or write the bundle again") from None


def open_bundle(measurements: Path, target: Target, device: str, space: SearchSpace, kind: str) -> Bundle:
    """The bundle `measurements` (its logs/ folder or CSV) belong to, checked against what the
    command says it is for."""
    b = load_bundle(bundle_folder(measurements))
    if measurements.resolve() == b.folder.resolve():
        raise PipelineError(f"{measurements} is the bundle itself; pass its {LOGS}/ folder or its {CSV_NAME}")
    _check_bundle_is_for(b, target, device, space)
    if b.kind != kind:
        held = "whole networks for validate" if b.kind == "validate" else "the blocks of a table"
        raise PipelineError(f"the bundle at '{b.folder}' holds {held}; bring its times in with "
                            f"'{bundle_command(b, measurements)}'")
    return b


def _check_bundle_is_for(b: Bundle, target: Target, device: str, space: SearchSpace) -> None:
    for what, have, want in (("target", b.target, target.name), ("device", b.device, device),
                             ("space", b.space_fingerprint, space.fingerprint)):
        if have != want:
            shown = (b.space, space.name) if what == "space" else (have, want)
            raise PipelineError(f"the bundle at '{b.folder}' was written for {what} '{shown[0]}', not '{shown[1]}'; "
                                f"pass the same --target, --device and --space as when it was written")
