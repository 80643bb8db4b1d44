"""`pipeline`: the command line. Commands parse, call one library function, and print."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from benchmarks.agent.backends import BACKENDS
from benchmarks.agent.client import Remote, resolve_remote
from benchmarks.agent.wire import MAX_ARTIFACT_BYTES
from benchmarks.bundle import Bundle
from benchmarks.bundle import summary as bundle_summary
from benchmarks.context import TIMINGS
from benchmarks.device import HOST_DEVICE
from benchmarks.protocol import Protocol
from benchmarks.targets import TARGETS, Target, parse_options, resolve_target
from blocks import BLOCK_SETS, BLOCKS, SPACES, SearchSpace, resolve_space
from core import __version__
from core.config import build_config, merge
from core.errors import PipelineError, StorageError
from core.fileio import STORAGE_ERRNOS, read_config, storage_fault
from core.plugins import load_plugin
from core.workspace import Workspace
from pipeline import flow
from pipeline.render import (agent_text, benchmark_summary, benchmark_text, bundle_line, bundle_text, export_summary,
                             export_text, run_summary, search_summary, search_text, sweep_summary, sweep_text,
                             targets_text, validate_summary, validate_text)
from pipeline.stages import benchmark as benchmark_stage, compare as compare_stage, export as export_stage
from pipeline.stages import search as search_stage, train as train_stage, validate as validate_stage
from pipeline.stages.compare import render as compare_render
from pipeline.stages.quantized import MIN_CALIBRATION, QuantizeConfig
from pipeline.stages.validate import ValidateConfig
from export.verify import QuantGoal
from pipeline.training.distributed import check_device
from pipeline.training.loop import TrainConfig
from pipeline.training.search import SearchConfig
from pipeline.training.sweep import SweepReport

# What a Ctrl-C leaves, for the commands that keep less than everything finished so far
# (`search` and `run` say it themselves, from the search's checkpoint).
INTERRUPTED = {
    "validate": "the networks exported so far are cached; the same command exports only the rest, "
                "then times them all again",
    "export": "a finished export is cached; run the same command to check and time it again",
    "compare": "finished exports are cached; run the same command to measure again",
    "train": "training keeps no checkpoint part-way; run the same command to train again",
}
# What a full or read-only disk leaves (StorageError), where it differs from the above: files are
# written atomically, so the one being written is the only thing lost.
AFTER_FAULT = {
    "benchmark": "the table keeps every row measured so far (it is saved after each) and the same command "
                 "measures only the rest",
    "search": "the checkpoint saved before stays whole: run the same command with --resume to continue from it "
              "(--sweep goes on by itself)",
    "run": "the table keeps every row measured so far; the same command measures only the rest and searches again",
}


# Where a -q run's warnings go, under its workspace (--out).
QUIET_LOG = Path("pipeline.log")
QUIET_HELP = "No progress bar, grids or warnings: one summary line (warnings go to OUT/pipeline.log)."
DATA_HELP = ("'digits' (embedded, easy), 'digits-hard' (the proxy task on which architectures differ; "
             "docs/search.md) or a folder with one sub-folder per class.")


class Cli(click.Group):
    """Turns PipelineError into one line on stderr and its exit code: users never see a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as e:
            if not e.quiet:
                kept = f"; {self._kept(ctx, AFTER_FAULT)}" if isinstance(e, StorageError) else ""
                click.echo(f"{e.label}: {e}{kept}", err=True)
            sys.exit(e.exit_code)
        except OSError as e:
            # A full or read-only disk met outside the atomic writes (a folder made, a temporary
            # file) is the user's to fix too; any other OSError is a bug and keeps its traceback.
            fault = storage_fault(e) if e.errno in STORAGE_ERRNOS else None
            if fault is None:
                raise
            click.echo(f"{fault.label}: {fault}; {self._kept(ctx, AFTER_FAULT)}", err=True)
            sys.exit(fault.exit_code)
        except KeyboardInterrupt:
            how = self._kept(ctx, {})
            click.echo(f"interrupted: {how}", err=True)
            sys.exit(130)

    @staticmethod
    def _kept(ctx: click.Context, first: dict[str, str]) -> str:
        """What the stopped command keeps, from `first` else from what a Ctrl-C keeps."""
        name = ctx.invoked_subcommand or ""
        return first.get(name) or INTERRUPTED.get(name, "everything finished so far is saved; run the same command "
                                                          "to go on")


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--plugin", multiple=True, metavar="FILE", help="Python file that registers blocks, spaces or targets.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
def main(plugin: tuple[str, ...], verbose: bool) -> None:
    """Hardware-aware architecture search: benchmark blocks on a target, search, export.

    \b
    pipeline benchmark --target desktop   per-block latency table for this machine
    pipeline search    --target desktop   super-net search against that table
    pipeline export    --target desktop   derived network in the target's format, checked and timed
    pipeline run                          all three on the embedded digits data
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    for p in plugin:
        load_plugin(p)


# ---------------------------------------------------------------- shared options
def _is_compute(name: str) -> bool:
    return name in ("cpu", "cuda") or name.startswith("cuda:")


def _table_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # A table named 'cuda' would look like a GPU measurement; where training runs is --compute.
    if _is_compute(value):
        trains = any(p.name == "compute" for p in ctx.command.params)
        where = (f"to train on it, use --compute {value}" if trains
                 else "the runners here time on this machine's CPU")
        raise PipelineError(f"--device {value}: --device names the device a latency table belongs to (host, pixel1, "
                            f"...), not a compute device; {where}")
    return value


def _compute(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        check_device(value, "--compute")
    return value


def _common(f: Callable) -> Callable:
    f = click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"),
                     show_default=True, help="Workspace folder for tables, architectures and models.")(f)
    f = click.option("--device", default=HOST_DEVICE, show_default=True, callback=_table_device,
                     help="Device the latency table belongs to ('host' = this machine).")(f)
    f = click.option("--space", "space_name", default="tiny", show_default=True,
                     help="Search space: a registered name (see 'pipeline spaces') or a YAML/TOML file.")(f)
    f = click.option("--target-option", "-o", "target_options", multiple=True, metavar="KEY=VALUE",
                     help="Override one exporter or runner option of the target, e.g. compute_units=CPU_ONLY.")(f)
    f = click.option("--target", "target_name", default="desktop", show_default=True,
                     help="Deployment target: a name (see 'pipeline targets') or a YAML/TOML target file.")(f)
    return f


def _compute_option(f: Callable) -> Callable:
    return click.option("--compute", metavar="cpu|cuda|cuda:N", callback=_compute,
                        help="Where training runs: cpu [default] or a CUDA GPU.")(f)


def _json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON object (docs/json.md); messages go to stderr.")(f)


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)  # numpy scalars, paths


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _echo_json(data: dict[str, Any]) -> None:
    click.echo(json.dumps(_finite(data), default=_json_default))


def _show(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print a stage's result: its JSON object, or its text (a device's bundle, either way, as a bundle)."""
    if as_json:
        _echo_json(bundle_summary(result) if isinstance(result, Bundle) else result.to_dict())
    else:
        click.echo(bundle_text(result) if isinstance(result, Bundle) else text(result))


class _Held(logging.Handler):
    """Keeps the warnings a -q run logs: they go to its log file and into its one summary line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.messages: list[str] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.lines.append(self.format(record))

    def write(self, path: Path) -> None:
        """Append the warnings to `path`; where it cannot be written (--out is refused, say), the
        summary line still counts them."""
        if not self.lines:
            return
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write("\n".join(self.lines) + "\n")


@contextlib.contextmanager
def _quiet_logs(quiet: bool, root: Path) -> Iterator[_Held]:
    """Under -q, warnings logged during the command (a library's too, and Python's `warnings`)
    go to ROOT/pipeline.log and are counted for the summary line, not printed."""
    held = _Held()
    if not quiet:
        yield held
        return
    logger = logging.getLogger()
    saved = logger.handlers[:]
    logger.handlers[:] = [held]
    logging.captureWarnings(True)
    try:
        yield held
    finally:
        logging.captureWarnings(False)
        logger.handlers[:] = saved
        held.write(root / QUIET_LOG)


def _hold_logs(quiet: bool, root: Path) -> _Held:
    """`_quiet_logs` for the rest of the running command (click leaves it when the command does)."""
    return click.get_current_context().with_resource(_quiet_logs(quiet, root))


def _summary(line: str, held: _Held, root: Path) -> str:
    """A -q run's one line, with the warnings it held back counted (the first quoted)."""
    if not held.messages:
        return line
    first = held.messages[0].splitlines()[0][:120]
    return f"{line}; {len(held.messages)} warning(s) in {root / QUIET_LOG} (first: {first})"


def _quiet_show(result: Any, as_json: bool, summary: Callable[[Any], str], held: _Held, root: Path) -> None:
    """Print a -q run's result: its JSON object, or its one summary line."""
    if as_json:
        return _show(result, True, summary)
    click.echo(_summary(bundle_line(result) if isinstance(result, Bundle) else summary(result), held, root))


def _given(name: str) -> bool:
    """Whether the user typed option `name` (rather than it taking its default)."""
    return click.get_current_context().get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _protocol_options(f: Callable) -> Callable:
    d = Protocol()
    f = click.option("--threads", type=click.IntRange(1), default=d.threads, show_default=True, help="Runtime threads.")(f)
    f = click.option("--repeats", type=click.IntRange(3), default=d.repeats, show_default=True, help="Timed repeats per artifact.")(f)
    f = click.option("--min-repeat-ms", type=click.FloatRange(0.1), default=d.min_repeat_ms, show_default=True,
                     help="Each repeat runs enough calls to last at least this long.")(f)
    f = click.option("--row-timeout", type=click.FloatRange(0), default=d.row_timeout_s, show_default=True,
                     help="Seconds one block may take to check and time before it is recorded as failed (0: no limit).")(f)
    return f


def _remote_options(f: Callable) -> Callable:
    f = click.option("--token-file", type=click.Path(path_type=Path),
                     help="File holding the token the agent printed at start (with --remote).")(f)
    f = click.option("--remote", "remote_url", metavar="URL",
                     help="Time on the device of a measurement agent ('pipeline agent') at URL instead of here. "
                          "A device file (--device my-phone.yaml, or my-phone.yaml in this folder or OUT/devices) "
                          "holds the URL and token file itself.")(f)
    return f


def _quantize_options(f: Callable) -> Callable:
    d, goal = QuantizeConfig(), QuantGoal()
    f = click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), default=goal.max_accuracy_drop,
                     show_default=True, help="8-bit only: the held-out accuracy it may lose (0.01 = one point), "
                                             "or it is not written.")(f)
    f = click.option("--min-agreement", type=click.FloatRange(0, 1), default=goal.min_agreement, show_default=True,
                     help="8-bit only: the share of held-out images whose top-1 class must match the float "
                          "model's, or it is not written.")(f)
    f = click.option("--calibration-samples", type=click.IntRange(MIN_CALIBRATION, 100_000), default=d.samples,
                     show_default=True, help="8-bit only: training images its activations' ranges are calibrated on.")(f)
    return f


def _quantize_config(data: str | None, samples: int, min_agreement: float, max_drop: float) -> QuantizeConfig:
    return QuantizeConfig(QuantGoal(min_agreement, max_drop), samples, data)


def _remote(device: str, remote_url: str | None, token_file: Path | None, root: Path) -> Remote | None:
    return resolve_remote(device, remote_url, token_file, root)


def _device_name(device: str, remote: Remote | None) -> str:
    """The device a table and an architecture belong to: a device file's name, else `--device`."""
    return remote.name if remote is not None and remote.name else device


def _protocol(threads: int, repeats: int, min_repeat_ms: float, row_timeout: float = Protocol.row_timeout_s) -> Protocol:
    return Protocol(threads=threads, repeats=repeats, min_repeat_ms=min_repeat_ms, row_timeout_s=row_timeout)


def _search_options(f: Callable) -> Callable:
    opts = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML/TOML search config; flags override it."),
        click.option("--data", default="digits", show_default=True, help=DATA_HELP),
        click.option("--epochs", type=int, help="Search epochs [10]."),
        click.option("--warmup-epochs", type=int, help="Epochs in which only W moves [gumbel: 50% of --epochs; softmax, sampled: 20%]."),
        click.option("--batch-size", type=int, help="Batch size per process [64]."),
        click.option("--loss", type=str, help="Latency term: 'mul' (FBNet: CE·a·log(Lat)^b), 'add' (CE + λ·Lat_ms) or 'log' (CE + λ·ln Lat, the same trade-off on any device) [mul; with --latency-target: target]."),
        click.option("--lam", type=float, help="λ: per millisecond for add, per unit of ln Lat for log, of |Lat/target − 1| for target (mul uses --a, --b) [0.1; target: 1.0]."),
        click.option("--a", type=float, help="a for --loss mul [0.2]."),
        click.option("--b", type=float, help="b for --loss mul [0.6]."),
        click.option("--w-lr", type=float, help="SGD learning rate of W [0.05]."),
        click.option("--theta-lr", type=float, help="Adam learning rate of Θ [gumbel: 0.1; softmax, sampled: 0.05]."),
        click.option("--seed", type=int, help="Random seed [0]."),
        click.option("--mixing", type=str, help="How a layer mixes its candidates: 'softmax' (all, weighted by α), "
                     "'gumbel' (FBNet: Gumbel-softmax samples, annealed) or 'sampled' (ProxylessNAS: 1-2 paths a step) [gumbel]."),
        click.option("--temperature", type=float, help="gumbel: initial temperature [5.0]."),
        click.option("--temperature-decay", type=float, help="gumbel: τ is multiplied by exp(-decay) each epoch [0.3; FBNet's 90 epochs: 0.045]."),
        click.option("--paths", type=int, help="sampled: candidates a Θ step runs, at least 2 [2]."),
        click.option("--latency-target", type=float, metavar="MS",
                     help="Most accurate architecture predicted at most MS milliseconds (instead of trading with λ)."),
        click.option("--amp/--no-amp", default=None, help="bfloat16 mixed precision on a CUDA GPU [on]."),
        click.option("--resolution", type=int,
                     help="Train the super-net at this input size (a proxy; latency stays the table's) [the space's]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _search_settings(config_file: Path | None, compute: str | None, **flags: Any) -> dict[str, Any]:
    """The search config as given: the file's keys, then the flags given on the command line."""
    base = read_config(config_file, "search config") if config_file else {}
    if compute is not None:
        flags["device"] = compute
    return merge(base, flags)


def _search_config(config_file: Path | None, compute: str | None, **flags: Any) -> SearchConfig:
    return build_config(SearchConfig, _search_settings(config_file, compute, **flags), "search config")


def _target(target_name: str, target_options: tuple[str, ...]) -> Target:
    return resolve_target(target_name, parse_options(target_options))


def _ctx(target_name: str, target_options: tuple[str, ...], space_name: str, root: Path) -> tuple:
    return _target(target_name, target_options), resolve_space(space_name), Workspace(root)


# ---------------------------------------------------------------- listing
def _target_dict(t: Target) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "exporter": t.exporter, "runner": t.runner,
            "options": {**t.exporter_options, **t.runner_options},
            "export_here": t.exportable_here(), "measure_here": t.measurable_here()}


@main.command()
@_json_option
def targets(as_json: bool) -> None:
    """List deployment targets, what each needs, and whether this machine can measure it."""
    found = [t for _, t in TARGETS.items()]
    if as_json:
        return _echo_json({"targets": [_target_dict(t) for t in found]})
    click.echo(targets_text(found))


@main.command()
@_json_option
def spaces(as_json: bool) -> None:
    """List registered search spaces."""
    found = [{"name": name, "layers": len(s.layers), "resolution": s.resolution, "architectures": s.size(),
              "description": s.description} for name, s in SPACES.items()]
    if as_json:
        return _echo_json({"spaces": found})
    for s in found:
        click.echo(f"{s['name']:<10} {s['layers']:>2} layers, {s['resolution']}x{s['resolution']}, "
                   f"{s['architectures']:.3g} architectures: {s['description']}")


@main.command(name="blocks")
@_json_option
def list_blocks(as_json: bool) -> None:
    """List candidate blocks and block sets."""
    if as_json:
        return _echo_json({"blocks": {name: b.description for name, b in BLOCKS.items()},
                           "sets": {name: list(names) for name, names in BLOCK_SETS.items()}})
    for name, b in BLOCKS.items():
        click.echo(f"{name:<10} {b.description}")
    for name, names in BLOCK_SETS.items():
        click.echo(f"set {name}: {', '.join(names)}")


# ---------------------------------------------------------------- stages
@main.group(invoke_without_command=True)
@_common
@_protocol_options
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Write the table here instead of the workspace.")
@click.option("--force", is_flag=True, help="Re-measure every row, even those already in the table.")
@click.option("--jobs", type=click.IntRange(1), default=os.cpu_count() or 1, show_default=True,
              help="Worker processes that export blocks in parallel.")
@click.option("--rounds", type=click.IntRange(1),
              help="Time every row this many times, in rounds over all the rows measured now, and keep its median "
                   "round: it outvotes slow spells of a shared machine, each round costing what the first did "
                   "[default: 1 here, 3 in a device's bundle].")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Time every row against a reference row of the space, each repeat followed by one of the "
                   "reference's, and keep its ratio to it: the machine's speed wandering under both cancels. A table "
                   "keeps the way it was measured when resumed.")
@click.option("--timing", type=click.Choice(TIMINGS), default="isolated", show_default=True,
              help="Time each row alone, or in-context: inside the network of every layer's cheapest candidate, "
                   "against it (a table beside the isolated one, which is measured first; validate, search and "
                   "export read it with --table).")
@_remote_options
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.pass_context
def benchmark(ctx: click.Context, target_name: str, target_options: tuple[str, ...], space_name: str, device: str,
              root: Path, threads: int, repeats: int, min_repeat_ms: float, row_timeout: float, table_path: Path | None,
              force: bool, jobs: int, rounds: int | None, reference: bool, timing: str, remote_url: str | None,
              token_file: Path | None, as_json: bool, quiet: bool) -> None:
    """Export and time every (layer, block) of the space on the target: a latency table.

    \b
    pipeline benchmark --target android                  measure here
    pipeline benchmark --target android --device pixel7  a bundle of the blocks to time on the phone
    pipeline benchmark --target android --remote URL --token-file F   timed through an agent there
    pipeline benchmark --target ios --device my-iphone   through the agent my-iphone.yaml names
    pipeline benchmark import FILE --target ...          bring in a table (or a bundle's times) measured there
    """
    if ctx.invoked_subcommand is not None:
        return
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    remote = _remote(device, remote_url, token_file, root)
    device = _device_name(device, remote)
    command = _command("benchmark", "import", target_name=target_name, device=device, space_name=space_name,
                       root=root, table_path=table_path)
    held = _hold_logs(quiet, root)
    result = benchmark_stage.benchmark_or_bundle(space, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout),
                                                 device, command, table_path, force, not quiet, jobs, rounds, reference,
                                                 remote, timing)
    if quiet:
        return _quiet_show(result, as_json, benchmark_summary, held, root)
    _show(result, as_json, lambda r: benchmark_text(r, space))


@benchmark.command(name="import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--target", "target_name", required=True, help="Target the table was measured for, e.g. android.")
@click.option("--device", required=True, callback=_table_device, help="Name of the device it was measured on, e.g. pixel1.")
@click.option("--space", "space_name", required=True, help="Search space the table must fit, e.g. proxyless.")
@click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"), show_default=True,
              help="Workspace folder.")
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Write the table here instead of the workspace.")
@click.option("--force", is_flag=True, help="Replace an existing table for this target, device and space.")
@_json_option
def import_cmd(file: Path, target_name: str, device: str, space_name: str, root: Path, table_path: Path | None,
               force: bool, as_json: bool) -> None:
    """Import a latency table measured on a device: this tool's JSON, or ProxylessNAS/OFA YAML."""
    target, space, ws = _target(target_name, ()), resolve_space(space_name), Workspace(root)
    report = benchmark_stage.import_table(file, space, target, ws, device, table_path, force)
    _show(report, as_json, lambda r: f"imported {len(r.table.rows)} rows from '{file}' as {target.name}/{device} for "
                                      f"space '{space.name}'\n" + benchmark_text(r, space))


@main.command()
@_common
@_compute_option
@_search_options
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Latency table to search against.")
@click.option("--output", type=click.Path(path_type=Path), help="Architecture file to write.")
@click.option("--resume", is_flag=True, help="Continue the search from its checkpoint (written after every epoch and on Ctrl-C).")
@click.option("--sweep", "sweep_spec", metavar="PARAM=V1,V2,...",
              help="Pareto sweep: one search per value of lam or latency-target, e.g. lam=0.01,0.1,1; each "
                   "derived network and --sweep-random random ones are trained briefly and plotted.")
@click.option("--sweep-random", type=click.IntRange(0), default=10, show_default=True,
              help="Random architectures trained beside the sweep's, for reference.")
@click.option("--sweep-train-epochs", type=click.IntRange(1), default=5, show_default=True,
              help="Epochs each network of the sweep is trained from scratch.")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def search(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, compute: str | None,
           root: Path, config_file: Path | None, data: str, table_path: Path | None, output: Path | None, resume: bool,
           sweep_spec: str | None, sweep_random: int, sweep_train_epochs: int, as_json: bool, quiet: bool,
           **flags: Any) -> None:
    """Train the super-net against the latency table and write the derived architecture.

    \b
    On a GPU:          pipeline search --compute cuda
    Several processes: torchrun --nproc-per-node 2 $(which pipeline) search ...
    Pareto sweep:      pipeline search --sweep lam=0.01,0.1,1
    """
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    sweep = flow.Sweep(sweep_spec, sweep_random, sweep_train_epochs) if sweep_spec is not None else None
    held = _hold_logs(quiet, root)
    report = flow.search_or_sweep(space, target, ws, _search_settings(config_file, compute, **flags), data, device,
                                  table_path, output, resume, sweep, progress=not quiet)
    if report is None:  # the other processes of a torchrun job
        return
    if isinstance(report, SweepReport):
        if quiet and not as_json:
            return click.echo(_summary(sweep_summary(report), held, root))
        return _echo_json(search_stage.sweep_dict(report)) if as_json else click.echo(sweep_text(report))
    if quiet:
        return _quiet_show(report, as_json, search_summary, held, root)
    _show(report, as_json, search_text)


def _train_options(f: Callable) -> Callable:
    d = TrainConfig()
    f = click.option("--train-epochs", type=click.IntRange(1), default=d.epochs, show_default=True, help="Epochs of training from scratch.")(f)
    f = click.option("--train-lr", type=click.FloatRange(min=0, min_open=True), default=d.lr, show_default=True, help="SGD learning rate.")(f)
    return f


@main.command()
@_common
@_compute_option
@_train_options
@click.option("--arch", type=click.Path(path_type=Path), help="Architecture file [the workspace's for this space/target/device].")
@click.option("--data", default=None, help=DATA_HELP.rstrip(".") + " [the data the search used].")
@click.option("--seed", type=int, default=0, show_default=True)
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def train(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, compute: str | None,
          root: Path, arch: Path | None, data: str | None, seed: int, train_epochs: int, train_lr: float, as_json: bool,
          quiet: bool) -> None:
    """Train a derived network from scratch and save its weights beside the architecture."""
    # the resolved target's name: a precision option or a target file names its own folder
    target_folder = _target(target_name, target_options).name
    path, space = train_stage.locate(Workspace(root), space_name, target_folder, device, arch, _given("space_name"))
    cfg = TrainConfig(epochs=train_epochs, lr=train_lr, seed=seed, device=compute or "cpu")
    held = _hold_logs(quiet, root)
    report = train_stage.train_derived(path, space, data, cfg, progress=not quiet)
    if quiet:
        return _quiet_show(report, as_json, lambda r: f"trained weights {r.path}: held-out test accuracy "
                                                      f"{r.test_accuracy:.3f}", held, root)
    _show(report, as_json, lambda r: f"trained weights: {r.path}\nheld-out test accuracy: {r.test_accuracy:.3f}")


@main.command()
@_common
@_protocol_options
@_train_options
@click.option("--arch", type=click.Path(path_type=Path), help="Architecture file [the workspace's for this space/target/device].")
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Table whose prediction to print beside the measurement.")
@click.option("--output", type=click.Path(path_type=Path), help="Model file to write.")
@click.option("--train", "do_train", is_flag=True, help="Train the derived network from scratch first.")
@click.option("--data", default=None, help="Data for --train and for an 8-bit target's calibration and check "
              "[the data the search used].")
@_quantize_options
@_remote_options
@click.option("--operations", is_flag=True,
              help="With --remote to an iPhone: each operation's time inside the network, as Core ML estimates it.")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False), default="nchw", show_default=True,
              help="The model's input layout: nhwc for LiteRT, as Android's bitmaps come (no transpose inside).")
@click.option("--io", "io_type", type=click.Choice(["float", "int8"], case_sensitive=False), default="float",
              show_default=True, help="An int8 LiteRT model's input and output tensors: float (quantized inside) "
              "or int8 (the app quantizes with the scale and zero point in the sidecar JSON).")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def export(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, root: Path, threads: int,
           repeats: int, min_repeat_ms: float, row_timeout: float, train_epochs: int, train_lr: float,
           arch: Path | None, table_path: Path | None, output: Path | None, do_train: bool, data: str,
           remote_url: str | None, token_file: Path | None, operations: bool, calibration_samples: int,
           min_agreement: float, max_accuracy_drop: float, layout: str, io_type: str, as_json: bool,
           quiet: bool) -> None:
    """Export the derived network to the target's format, check it against PyTorch and time it
    (here, or on an agent's device with --remote). At an 8-bit precision (-o precision=int8, or
    a target such as desktop-int8) it is calibrated on the training data and written only if it
    keeps the float model's answers on the held-out split."""
    target, ws = _target(target_name, target_options), Workspace(root)
    remote = _remote(device, remote_url, token_file, root)
    device = _device_name(device, remote)
    path, space = train_stage.locate(ws, space_name, target.name, device, arch, _given("space_name"))
    held, trained = _hold_logs(quiet, root), ""
    if do_train:
        t = train_stage.train_derived(path, space, data, TrainConfig(epochs=train_epochs, lr=train_lr),
                                      not quiet)
        trained = f"trained from scratch: test accuracy {t.test_accuracy:.3f}"
        if not quiet:
            click.echo(trained, err=as_json)
    report = export_stage.export(path, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout), device,
                                 space, table_path, output, remote, operations,
                                 _quantize_config(data, calibration_samples, min_agreement, max_accuracy_drop),
                                 app_cfg=export_stage.AppConfig(layout.upper(), io_type.lower()))
    if quiet:
        return _quiet_show(report, as_json, lambda r: export_summary(r) + (f"; {trained}" if trained else ""), held,
                           root)
    _show(report, as_json, export_text)


@main.command()
@_common
@_compute_option
@_search_options
@_protocol_options
@_train_options
@click.option("--train/--no-train", "do_train", default=True, show_default=True,
              help="Train the derived network from scratch before export.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Where the table has no calibration, time 20 whole random networks and fit one (as 'validate' "
                   "does), so that search and the export's prediction account for what blocks timed alone miss.")
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def run(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, compute: str | None,
        root: Path, config_file: Path | None, data: str, threads: int, repeats: int, min_repeat_ms: float,
        row_timeout: float, train_epochs: int, train_lr: float, do_train: bool, calibrate: bool, as_json: bool,
        quiet: bool, **flags: Any) -> None:
    """benchmark -> calibrate -> search -> (train) -> export in one command; defaults run on the embedded digits."""
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    cfg = _search_config(config_file, compute, **flags)
    train = TrainConfig(epochs=train_epochs, lr=train_lr) if do_train else None
    held = _hold_logs(quiet, root)
    printer = (lambda stage, r: None) if quiet else _run_printer(space, target, device, cfg, data, train, as_json)
    # Under --json stdout holds the one object: what the stages print (the search's epoch lines) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = flow.run(space, target, ws, cfg, _protocol(threads, repeats, min_repeat_ms, row_timeout), data,
                          device, train, progress=not quiet, on_stage=printer,
                          calibrate=flow.RUN_CALIBRATION if calibrate else None)
    if as_json:
        _echo_json(report.to_dict())
    elif quiet:
        click.echo(_summary(run_summary(report), held, root))


def _run_printer(space: SearchSpace, target: Target, device: str, cfg: SearchConfig, data: str,
                 train: TrainConfig | None, as_json: bool) -> Callable[[str, Any], None]:
    """Print each stage of `pipeline run` as it starts (report None) and when it is done: under
    --json, on stderr, so that stdout holds the one object at the end."""
    starts = {"benchmark": f"== benchmark: {space.name} on {target.name}/{device}",
              "calibrate": f"\n== calibrate: {flow.RUN_CALIBRATION.samples} whole networks timed, half fit, half judge",
              "search": f"\n== search: {cfg.epochs} epochs, loss '{cfg.loss}', data '{data}'",
              "train": f"\n== train from scratch: {train.epochs if train else 0} epochs",
              "export": f"\n== export: {target.name}"}
    texts = {"benchmark": lambda r: benchmark_text(r, space), "calibrate": validate_text, "search": search_text,
             "train": lambda r: f"held-out test accuracy {r.test_accuracy:.3f}", "export": export_text}

    def show(stage: str, report: Any) -> None:
        if stage == "remeasure":
            d = report.drift
            click.echo(f"\n== benchmark again: the table's rows, re-timed beside the networks, ran {d['median']:.2f}x "
                       "the table, so it no longer describes this machine; measuring it once more", err=as_json)
        elif report is not None:
            click.echo(texts[stage](report), err=as_json)
        elif stage != "benchmark" or device == HOST_DEVICE:
            click.echo(starts[stage], err=as_json)
        else:
            click.echo(f"== benchmark: {target.name}/{device} is not this machine; using its table", err=as_json)

    return show


@main.command()
@_common
@_protocol_options
@click.option("--samples", type=click.IntRange(1), default=ValidateConfig.samples, show_default=True,
              help="Random architectures to time (when fitting: half fit the calibration, half judge it).")
@click.option("--arch", "archs", multiple=True, type=click.Path(path_type=Path), help="Also time this derived architecture.")
@click.option("--fit/--no-fit", default=None,
              help="Fit a calibration on half the samples, judge it on the other half, store it in the table "
                   "[default: when the table has none and --samples is 16 or more]. --no-fit judges the stored "
                   "one (or the plain sum).")
@click.option("--rounds", type=click.IntRange(1), default=ValidateConfig.rounds, show_default=True,
              help="Times each network is timed, in rounds over all of them; their spread is the machine's noise "
                   f"(a network whose rounds are over {ValidateConfig.wide_pct:.0f}% apart gets "
                   f"{ValidateConfig.extra_rounds} more).")
@click.option("--recheck/--no-recheck", default=ValidateConfig.recheck, show_default=True,
              help="Re-time a few table rows around every round: does the table still describe this machine?")
@click.option("--reference/--no-reference", default=ValidateConfig.reference, show_default=True,
              help="Time every network against a reference network, each repeat followed by one of the reference's, "
                   "and keep the median ratio: the machine's speed wandering under both cancels (doubles the timing).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Table to check [the workspace's].")
@click.option("--measurements", type=click.Path(path_type=Path),
              help="For a --device other than host: the times measured there for the bundle an earlier "
                   "'validate --device NAME' wrote (its measurements.csv, or the logs/ folder of its script).")
@_remote_options
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def validate(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, root: Path,
             threads: int, repeats: int, min_repeat_ms: float, row_timeout: float, samples: int, archs: tuple[Path, ...],
             fit: bool | None, rounds: int, recheck: bool, reference: bool, seed: int, table_path: Path | None,
             measurements: Path | None, remote_url: str | None, token_file: Path | None, as_json: bool,
             quiet: bool) -> None:
    """Time whole random networks end to end and report how well the table predicts them.

    \b
    pipeline validate --target android                      times them here
    pipeline validate --target android --device pixel1      writes them to a bundle to time on the phone
    pipeline validate --target android --device pixel1 --measurements DIR/logs   judges those times
    pipeline validate --target android --device pixel1 --remote URL --token-file F   times them through an agent
    """
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    remote = _remote(device, remote_url, token_file, root)
    device = _device_name(device, remote)
    command = _command("validate", target_name=target_name, target_options=target_options, device=device,
                       space_name=space_name, root=root, table_path=table_path)
    held = _hold_logs(quiet, root)
    result = validate_stage.validate_or_bundle(
        space, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout),
        ValidateConfig(samples, seed, fit, rounds, recheck, reference=reference), device, command, table_path, archs,
        measurements, progress=not quiet and not as_json, remote=remote)
    if quiet:
        return _quiet_show(result, as_json, validate_summary, held, root)
    _show(result, as_json, validate_text)


def _command(*words: str, target_name: str, device: str, space_name: str, root: Path, table_path: Path | None,
             target_options: tuple[str, ...] = ()) -> str:
    """The command a bundle prints to finish with (`words` then the options as typed), so it
    works from where this one was run: same workspace, table, target file and options, plugins."""
    plugins = click.get_current_context().find_root().params.get("plugin", ())
    args = ["pipeline", *(a for p in plugins for a in ("--plugin", p)), *words, "--target", target_name,
            *(a for o in target_options for a in ("-o", o)), "--device", device, "--space", space_name]
    if root != Path("pipeline-out"):
        args += ["--out", str(root)]
    if table_path is not None:
        args += ["--table", str(table_path)]
    return shlex.join(args)


@main.command()
@click.argument("entries", nargs=-1, required=True)
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="What the report calls an entry [its table's TARGET/DEVICE]; give it once per entry, in order.")
@click.option("--space", "space_name", default="tiny", show_default=True, help="Space of entries that name none.")
@click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"), show_default=True,
              help="Workspace folder.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Where compare.md/.json/.png go [OUT/compare].")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Time every architecture end to end on each of this host's targets that run here.")
@_protocol_options
@_json_option
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
def compare(entries: tuple[str, ...], labels: tuple[str, ...], space_name: str, root: Path, report_dir: Path | None,
            measure: bool, threads: int, repeats: int, min_repeat_ms: float, row_timeout: float, as_json: bool,
            quiet: bool) -> None:
    """Compare architectures searched for different devices, side by side.

    \b
    ENTRY is TARGET/DEVICE[@SPACE] (its table and architecture in the workspace)
    or TABLE.json=ARCHITECTURE.json. Example:
      pipeline compare desktop/host android/host android-executorch/host
      pipeline compare a.json=a-arch.json b.json=b-arch.json --label fast --label small
    """
    ws = Workspace(root)
    specs = compare_stage.parse_entries(entries, labels, ws, space_name)
    held = _hold_logs(quiet, root)
    comparison, files = compare_stage.compare(specs, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout),
                                              measure, report_dir)
    if as_json:
        return _echo_json(compare_stage.to_dict(comparison, files))
    if quiet:
        return click.echo(_summary(f"compared {len(comparison.entries)} architectures; wrote "
                                   + ", ".join(str(p) for p in files.values()), held, root))
    click.echo(compare_render.to_text(comparison))
    click.echo("\nwrote " + ", ".join(str(p) for p in files.values()))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than loopback lets other machines in (with the token; use TLS).")
@click.option("--port", type=click.IntRange(0, 65535), default=8470, show_default=True, help="Port (0: any free one).")
@click.option("--token-file", type=click.Path(path_type=Path),
              help="Read the token from this file, or write a new one to it if it does not exist [a new token, printed].")
@click.option("--backend", "backends", multiple=True, default=("local",), show_default=True,
              type=click.Choice(sorted(BACKENDS.names())),
              help="Devices to offer: local (this machine's runners), adb (Android phones), iphone (on a Mac).")
@click.option("--store", type=click.Path(path_type=Path), default=Path("pipeline-out/agent"), show_default=True,
              help="Where received artifacts are kept (each under its hash; a restart keeps them).")
@click.option("--max-upload-mb", type=click.IntRange(1, 4096), default=MAX_ARTIFACT_BYTES // 2**20, show_default=True,
              help="Largest artifact accepted.")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="Serve HTTPS with this certificate (PEM)...")
@click.option("--tls-key", type=click.Path(path_type=Path), help="...and this key.")
@click.option("--backend-option", "backend_options", multiple=True, metavar="BACKEND.KEY=VALUE",
              help="A backend's setting, e.g. adb.benchmark_model=/data/local/tmp/benchmark_model or iphone.team=ABCDE12345.")
def agent(host: str, port: int, token_file: Path | None, backends: tuple[str, ...], store: Path, max_upload_mb: int,
          tls_cert: Path | None, tls_key: Path | None, backend_options: tuple[str, ...]) -> None:
    """Serve this machine's devices to 'benchmark/validate/export --remote': a measurement agent.

    \b
    pipeline agent                                   this machine's runners, on 127.0.0.1:8470
    pipeline agent --backend adb --token-file t.txt  Android phones on adb, token kept in t.txt
    pipeline agent --backend iphone --backend-option iphone.team=ABCDE12345   an iPhone on this Mac
    """
    from benchmarks.agent.server import AgentSettings, agent_token, make_backends, parse_backend_options, serve

    token, source = agent_token(token_file)
    settings = AgentSettings(token, store, make_backends(list(dict.fromkeys(backends)), parse_backend_options(backend_options)),
                             max_upload_mb * 2**20)

    def ready(url: str) -> None:
        click.echo(agent_text(url, token, source, token_file, settings))

    serve(settings, host, port, tls_cert, tls_key, ready)


if __name__ == "__main__":
    main()
