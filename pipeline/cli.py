"""`pipeline`: the command line. Commands parse, call one library function, and print."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import click

from benchmarks.device import HOST_DEVICE
from benchmarks.protocol import Protocol
from blocks import BLOCK_SETS, BLOCKS, SPACES, SearchSpace, resolve_space
from core import __version__
from pipeline import flow
from pipeline.stages import benchmark as benchmark_stage, compare as compare_stage, export as export_stage
from pipeline.stages import search as search_stage, train as train_stage, validate as validate_stage
from core.config import build_config, merge
from pipeline.training.data import load_data
from pipeline.training.distributed import check_device, single_process
from core.errors import PipelineError
from core.fileio import read_config
from core.plugins import load_plugin
from pipeline.render import (benchmark_text, bundle_text, export_text, search_text, sweep_text, targets_text,
                             validate_text)
from pipeline.training.search import SearchConfig
from pipeline.training.sweep import parse_sweep
from benchmarks.targets import TARGETS, Target, parse_options, resolve_target
from blocks.architecture import load_architecture
from pipeline.stages.compare import render as compare_render
from pipeline.training.loop import TrainConfig
from pipeline.stages.validate import ValidateConfig
from core.workspace import Workspace


# What a Ctrl-C leaves, for the commands that keep less than everything finished so far
# (`search` and `run` say it themselves, from the search's checkpoint).
INTERRUPTED = {
    "validate": "the networks exported so far are cached; the same command exports only the rest, "
                "then times them all again",
    "export": "a finished export is cached; run the same command to check and time it again",
    "compare": "finished exports are cached; run the same command to measure again",
    "train": "training keeps no checkpoint part-way; run the same command to train again",
}


class Cli(click.Group):
    """Turns PipelineError into one line on stderr and its exit code: users never see a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as e:
            if not e.quiet:
                click.echo(f"{e.label}: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            how = INTERRUPTED.get(ctx.invoked_subcommand or "", "everything finished so far is saved; run the same "
                                                                  "command to go on")
            click.echo(f"interrupted: {how}", err=True)
            sys.exit(130)


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
_COMPUTE = ("cpu", "cuda")


def _is_compute(name: str) -> bool:
    return name in _COMPUTE or name.startswith("cuda:")


def _table_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # A table named 'cuda' would look like a GPU measurement; the runners time on this host's CPU.
    if _is_compute(value):
        raise PipelineError(f"--device {value}: '{ctx.info_name}' names the device a latency table belongs to "
                            "(host, pixel1, ...), not a compute device; the runners here time on the CPU")
    return value


def _common(f: Callable) -> Callable:
    return _common_options(f, trains=False)


def _common_training(f: Callable) -> Callable:
    """_common for commands that train: --device also names the torch device (cpu, cuda, cuda:N)."""
    return _common_options(f, trains=True)


def _common_options(f: Callable, trains: bool) -> Callable:
    f = click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"),
                     show_default=True, help="Workspace folder for tables, architectures and models.")(f)
    if trains:
        f = click.option("--device", "devices", multiple=True, metavar="NAME",
                         help="Device the latency table belongs to [host = this machine], or where to train: "
                              "cpu [default] or cuda[:N]. Give it twice for both: --device pixel1 --device cuda.")(f)
    else:
        f = click.option("--device", default=HOST_DEVICE, show_default=True, callback=_table_device,
                         help="Device the latency table belongs to ('host' = this machine).")(f)
    f = click.option("--space", "space_name", default="tiny", show_default=True,
                     help="Search space: a registered name (see 'pipeline spaces') or a YAML/TOML file.")(f)
    f = click.option("--target-option", "-o", "target_options", multiple=True, metavar="KEY=VALUE",
                     help="Override one exporter or runner option of the target, e.g. compute_units=CPU_ONLY.")(f)
    f = click.option("--target", "target_name", default="desktop", show_default=True,
                     help="Deployment target: a name (see 'pipeline targets') or a YAML/TOML target file.")(f)
    return f


def _protocol_options(f: Callable) -> Callable:
    d = Protocol()
    f = click.option("--threads", type=click.IntRange(1), default=d.threads, show_default=True, help="Runtime threads.")(f)
    f = click.option("--repeats", type=click.IntRange(3), default=d.repeats, show_default=True, help="Timed repeats per artifact.")(f)
    f = click.option("--min-repeat-ms", type=click.FloatRange(0.1), default=d.min_repeat_ms, show_default=True,
                     help="Each repeat runs enough calls to last at least this long.")(f)
    f = click.option("--row-timeout", type=click.FloatRange(0), default=d.row_timeout_s, show_default=True,
                     help="Seconds one block may take to check and time before it is recorded as failed (0: no limit).")(f)
    return f


def _protocol(threads: int, repeats: int, min_repeat_ms: float, row_timeout: float = Protocol.row_timeout_s) -> Protocol:
    return Protocol(threads=threads, repeats=repeats, min_repeat_ms=min_repeat_ms, row_timeout_s=row_timeout)


def _search_options(f: Callable) -> Callable:
    opts = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML/TOML search config; flags override it."),
        click.option("--data", default="digits", show_default=True, help="'digits' (embedded) or a folder with one sub-folder per class."),
        click.option("--epochs", type=int, help="Search epochs [10]."),
        click.option("--warmup-epochs", type=int, help="Epochs in which only W moves [20% of --epochs; gumbel: 10%]."),
        click.option("--batch-size", type=int, help="Batch size per process [64]."),
        click.option("--loss", type=str, help="Latency term: 'mul' (FBNet: CE·a·log(Lat)^b), 'add' (CE + λ·Lat_ms) or 'log' (CE + λ·ln Lat, the same trade-off on any device) [mul; with --latency-target: target]."),
        click.option("--lam", type=float, help="λ: per millisecond for add, per unit of ln Lat for log, of |Lat/target − 1| for target (mul uses --a, --b) [0.1; target: 1.0]."),
        click.option("--a", type=float, help="a for --loss mul [0.2]."),
        click.option("--b", type=float, help="b for --loss mul [0.6]."),
        click.option("--w-lr", type=float, help="SGD learning rate of W [0.05]."),
        click.option("--theta-lr", type=float, help="Adam learning rate of Θ [0.05; gumbel: 0.01]."),
        click.option("--seed", type=int, help="Random seed [0]."),
        click.option("--mixing", type=str, help="How a layer mixes its candidates: 'softmax' (all, weighted by α), "
                     "'gumbel' (FBNet: Gumbel-softmax samples, annealed) or 'sampled' (ProxylessNAS: 1-2 paths a step) [softmax]."),
        click.option("--temperature", type=float, help="gumbel: initial temperature [5.0]."),
        click.option("--temperature-decay", type=float, help="gumbel: τ is multiplied by exp(-decay) each epoch [0.045]."),
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


def _devices(values: tuple[str, ...]) -> tuple[str, str | None]:
    """Split --device values into (the table's device, the torch device to train on or None)."""
    table = [v for v in values if not _is_compute(v)]
    compute = [v for v in values if _is_compute(v)]
    if len(table) > 1 or len(compute) > 1:
        raise PipelineError(f"--device given as {', '.join(values)}: give at most one table device (host, pixel1, ...) "
                            "and one compute device (cpu, cuda, cuda:N)")
    return (table[0] if table else HOST_DEVICE), (compute[0] if compute else None)


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
@main.command()
def targets() -> None:
    """List deployment targets, what each needs, and whether this machine can measure it."""
    click.echo(targets_text([t for _, t in TARGETS.items()]))


@main.command()
def spaces() -> None:
    """List registered search spaces."""
    for name, s in SPACES.items():
        click.echo(f"{name:<10} {len(s.layers):>2} layers, {s.resolution}x{s.resolution}, "
                   f"{s.size():.3g} architectures: {s.description}")


@main.command(name="blocks")
def list_blocks() -> None:
    """List candidate blocks and block sets."""
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def benchmark(ctx: click.Context, target_name: str, target_options: tuple[str, ...], space_name: str, device: str,
              root: Path, threads: int, repeats: int, min_repeat_ms: float, row_timeout: float, table_path: Path | None, force: bool,
              jobs: int, rounds: int, reference: bool, quiet: bool) -> None:
    """Export and time every (layer, block) of the space on the target: a latency table.

    \b
    pipeline benchmark --target android                  measure here
    pipeline benchmark --target android --device pixel7  a bundle of the blocks to time on the phone
    pipeline benchmark import FILE --target ...          bring in a table (or a bundle's times) measured there
    """
    if ctx.invoked_subcommand is not None:
        return
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    if device != HOST_DEVICE:  # a table belongs to where it was timed: for another device, time it there
        command = _command("benchmark", "import", target_name=target_name, device=device, space_name=space_name,
                           root=root, table_path=table_path)
        click.echo(bundle_text(benchmark_stage.bundle_blocks(space, command, target, ws, device, threads,
                                                     rounds, jobs,
                                                     progress=not quiet)))
        return
    report = benchmark_stage.benchmark(space, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout), device,
                                table_path, force, progress=not quiet, jobs=jobs, rounds=rounds or 1, reference=reference)
    click.echo(benchmark_text(report, space))


@benchmark.command(name="import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--target", "target_name", required=True, help="Target the table was measured for, e.g. android.")
@click.option("--device", required=True, callback=_table_device, help="Name of the device it was measured on, e.g. pixel1.")
@click.option("--space", "space_name", required=True, help="Search space the table must fit, e.g. proxyless.")
@click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"), show_default=True,
              help="Workspace folder.")
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Write the table here instead of the workspace.")
@click.option("--force", is_flag=True, help="Replace an existing table for this target, device and space.")
def import_cmd(file: Path, target_name: str, device: str, space_name: str, root: Path, table_path: Path | None,
               force: bool) -> None:
    """Import a latency table measured on a device: this tool's JSON, or ProxylessNAS/OFA YAML."""
    target, space, ws = _target(target_name, ()), resolve_space(space_name), Workspace(root)
    report = benchmark_stage.import_table(file, space, target, ws, device, table_path, force)
    click.echo(f"imported {len(report.table.rows)} rows from '{file}' as {target.name}/{device} for space '{space.name}'")
    click.echo(benchmark_text(report, space))


@main.command()
@_common_training
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def search(target_name: str, target_options: tuple[str, ...], space_name: str, devices: tuple[str, ...], root: Path,
           config_file: Path | None, data: str, table_path: Path | None, output: Path | None, resume: bool,
           sweep_spec: str | None, sweep_random: int, sweep_train_epochs: int, quiet: bool, **flags: Any) -> None:
    """Train the super-net against the latency table and write the derived architecture.

    \b
    Several processes: torchrun --nproc-per-node 2 $(which pipeline) search ...
    Pareto sweep:      pipeline search --sweep lam=0.01,0.1,1
    """
    device, compute = _devices(devices)
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    settings = _search_settings(config_file, compute, **flags)
    cfg = build_config(SearchConfig, settings, "search config")
    check_device(cfg.device)
    if sweep_spec is not None:
        single_process("pipeline search --sweep")
    splits = load_data(data, cfg.resolution or space.resolution, space.in_channels, cfg.seed)
    if sweep_spec is not None:
        spec = parse_sweep(sweep_spec)
        if resume or output is not None:
            raise PipelineError("--sweep resumes by itself and writes into the workspace; drop --resume / --output")
        train_cfg = TrainConfig(epochs=sweep_train_epochs, seed=cfg.seed, device=cfg.device)
        click.echo(sweep_text(search_stage.sweep_search(space, target, ws, settings, spec, splits, train_cfg, sweep_random,
                                                    device, table_path, progress=not quiet)))
        return
    report = search_stage.search(space, target, ws, cfg, splits, device, table_path, output, progress=not quiet,
                             resume=resume)
    if report is not None:  # None on the other processes of a torchrun job
        click.echo(search_text(report))


def _train_options(f: Callable) -> Callable:
    d = TrainConfig()
    f = click.option("--train-epochs", type=click.IntRange(1), default=d.epochs, show_default=True, help="Epochs of training from scratch.")(f)
    f = click.option("--train-lr", type=click.FloatRange(min=0, min_open=True), default=d.lr, show_default=True, help="SGD learning rate.")(f)
    return f


def _arch_and_space(arch: Path | None, ws: Workspace, space_name: str, target: str,
                    device: str) -> tuple[Path, SearchSpace | None]:
    """An explicit --arch brings its own space (checked against --space only if that was given)."""
    space = resolve_space(space_name)
    if arch is not None:
        given = click.get_current_context().get_parameter_source("space_name")
        return arch, space if given == click.core.ParameterSource.COMMANDLINE else None
    return ws.architecture(space.name, target, device), space


@main.command()
@_common_training
@_train_options
@click.option("--arch", type=click.Path(path_type=Path), help="Architecture file [the workspace's for this space/target/device].")
@click.option("--data", default="digits", show_default=True, help="'digits' or an image folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(target_name: str, target_options: tuple[str, ...], space_name: str, devices: tuple[str, ...], root: Path,
          arch: Path | None, data: str, seed: int, train_epochs: int, train_lr: float, quiet: bool) -> None:
    """Train a derived network from scratch and save its weights beside the architecture."""
    device, compute = _devices(devices)
    check_device(compute or "cpu")
    report = _train(target_name, space_name, device, root, arch, data, seed, train_epochs, train_lr, quiet, compute or "cpu")
    click.echo(f"trained weights: {report.path}\nheld-out test accuracy: {report.test_accuracy:.3f}")


def _train(target_name: str, space_name: str, device: str, root: Path, arch: Path | None, data: str, seed: int,
           epochs: int, lr: float, quiet: bool, compute: str = "cpu") -> train_stage.TrainReport:
    path, space = _arch_and_space(arch, Workspace(root), space_name, target_name, device)
    a = load_architecture(path, space)
    # Train at the size the search trained at (a proxy resolution, if it used one).
    resolution = (a.info.get("search") or {}).get("resolution") or a.space.resolution
    splits = load_data(data, resolution, a.space.in_channels, seed)
    return train_stage.train(path, splits, TrainConfig(epochs=epochs, lr=lr, seed=seed, device=compute), a.space,
                          progress=not quiet)


@main.command()
@_common
@_protocol_options
@_train_options
@click.option("--arch", type=click.Path(path_type=Path), help="Architecture file [the workspace's for this space/target/device].")
@click.option("--table", "table_path", type=click.Path(path_type=Path), help="Table whose prediction to print beside the measurement.")
@click.option("--output", type=click.Path(path_type=Path), help="Model file to write.")
@click.option("--train", "do_train", is_flag=True, help="Train the derived network from scratch first.")
@click.option("--data", default="digits", show_default=True, help="Data for --train.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def export(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, root: Path, threads: int, repeats: int,
           min_repeat_ms: float, row_timeout: float, train_epochs: int, train_lr: float, arch: Path | None, table_path: Path | None,
           output: Path | None, do_train: bool, data: str, quiet: bool) -> None:
    """Export the derived network to the target's format, check it against PyTorch and time it."""
    target = _target(target_name, target_options)
    ws = Workspace(root)
    path, space = _arch_and_space(arch, ws, space_name, target_name, device)
    if do_train:
        t = _train(target_name, space_name, device, root, path, data, 0, train_epochs, train_lr, quiet)
        click.echo(f"trained from scratch: test accuracy {t.test_accuracy:.3f}")
    report = export_stage.export(path, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout), device, space, table_path, output)
    click.echo(export_text(report))


@main.command()
@_common_training
@_search_options
@_protocol_options
@_train_options
@click.option("--train/--no-train", "do_train", default=True, show_default=True,
              help="Train the derived network from scratch before export.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run(target_name: str, target_options: tuple[str, ...], space_name: str, devices: tuple[str, ...], root: Path,
        config_file: Path | None, data: str, threads: int, repeats: int, min_repeat_ms: float, row_timeout: float,
        train_epochs: int, train_lr: float, do_train: bool, quiet: bool, **flags: Any) -> None:
    """benchmark -> search -> (train) -> export in one command; defaults run on the embedded digits."""
    device, compute = _devices(devices)
    target, space, ws = _ctx(target_name, target_options, space_name, root)
    cfg = _search_config(config_file, compute, **flags)
    train = TrainConfig(epochs=train_epochs, lr=train_lr) if do_train else None
    flow.run(space, target, ws, cfg, _protocol(threads, repeats, min_repeat_ms, row_timeout), data, device, train,
                  progress=not quiet, on_stage=_run_printer(space, target, device, cfg, data, train))


def _run_printer(space: SearchSpace, target: Target, device: str, cfg: SearchConfig, data: str,
                 train: TrainConfig | None) -> Callable[[str, Any], None]:
    """Print each stage of `pipeline run` as it starts (report None) and when it is done."""
    starts = {"benchmark": f"== benchmark: {space.name} on {target.name}/{device}",
              "search": f"\n== search: {cfg.epochs} epochs, loss '{cfg.loss}', data '{data}'",
              "train": f"\n== train from scratch: {train.epochs if train else 0} epochs",
              "export": f"\n== export: {target.name}"}

    def show(stage: str, report: Any) -> None:
        if report is None:
            if stage != "benchmark" or device == HOST_DEVICE:
                click.echo(starts[stage])
            elif stage == "benchmark":
                click.echo(f"== benchmark: {target.name}/{device} is not this machine; using its table")
            return
        click.echo({"benchmark": lambda r: benchmark_text(r, space), "search": search_text,
                    "train": lambda r: f"held-out test accuracy {r.test_accuracy:.3f}", "export": export_text}[stage](report))

    return show


@main.command()
@_common
@_protocol_options
@click.option("--samples", type=click.IntRange(1), default=ValidateConfig.samples, show_default=True,
              help="Random architectures to time (when fitting: half fit the calibration, half judge it).")
@click.option("--arch", "archs", multiple=True, type=click.Path(path_type=Path), help="Also time this derived architecture.")
@click.option("--fit/--no-fit", default=None,
              help="Fit a calibration on half the samples, judge it on the other half, store it in the table "
                   "[default: when the table has none and --samples is 8 or more]. --no-fit judges the stored "
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
@click.option("--json", "as_json", is_flag=True, help="Print the headline metrics as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def validate(target_name: str, target_options: tuple[str, ...], space_name: str, device: str, root: Path,
             threads: int, repeats: int, min_repeat_ms: float, row_timeout: float, samples: int, archs: tuple[Path, ...],
             fit: bool | None, rounds: int, recheck: bool, reference: bool, seed: int, table_path: Path | None,
             measurements: Path | None, as_json: bool, quiet: bool) -> None:
    """Time whole random networks end to end and report how well the table predicts them.

    \b
    pipeline validate --target android                      times them here
    pipeline validate --target android --device pixel1      writes them to a bundle to time on the phone
    pipeline validate --target android --device pixel1 --measurements DIR/logs   judges those times
    """

    target, space, ws = _ctx(target_name, target_options, space_name, root)
    cfg = ValidateConfig(samples, seed, fit, rounds, recheck, reference=reference)
    if measurements is not None and device == HOST_DEVICE:
        raise PipelineError("--measurements brings in times measured on another device; name it with --device NAME "
                            "(validate times this machine's networks itself)")
    if measurements is None and device != HOST_DEVICE:
        command = _command("validate", target_name=target_name, target_options=target_options, device=device,
                           space_name=space_name, root=root, table_path=table_path)
        b = validate_stage.prepare(space, command, target, ws, cfg, device, threads, table_path, archs,
                           progress=not quiet and not as_json)
        click.echo(json.dumps({"bundle": str(b.folder), "networks": len(b.networks), "device": device})
                   if as_json else bundle_text(b))
        return
    if measurements is not None:
        r = validate_stage.validate_measured(space, target, ws, cfg, device, measurements, table_path)
    else:
        r = validate_stage.validate(space, target, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout), cfg, device,
                         table_path, archs, progress=not quiet and not as_json)
    if as_json:
        head = {k: r.headline[k] for k in validate_stage.METRIC_KEYS}
        click.echo(json.dumps({**head, "predictor": "calibrated" if "calibrated" in r.metrics else "table sum",
                               "fitted_now": r.fitted_now,
                               "by_predictor": r.metrics, "noise": r.noise, "drift": r.drift,
                               "plot": str(r.files["plot"])}))
        return
    click.echo(validate_text(r))


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


def _compare_spec(spec: str, ws: Workspace, default_space: str) -> tuple[Path, Path, str | None]:
    """`TARGET/DEVICE[@SPACE]` (the workspace's table and architecture) or `TABLE.json=ARCH.json`."""
    if "=" in spec:
        table, _, arch = spec.partition("=")
        return Path(table), Path(arch), None
    where, _, space_name = spec.partition("@")
    target, slash, device = where.partition("/")
    if not slash or not target or not device:
        raise PipelineError(
            f"compare entry '{spec}' must be TARGET/DEVICE[@SPACE] (e.g. android/pixel1@proxyless) or TABLE=ARCH files"
        )
    space = resolve_space(space_name or default_space)
    table, arch = ws.table(space.name, target, device), ws.architecture(space.name, target, device)
    dev = f" --device {device}" if device != HOST_DEVICE else ""
    if not table.exists():
        raise PipelineError(f"compare entry '{spec}': no table at '{table}'; run 'pipeline benchmark --target {target}"
                            f"{dev} --space {space.name}' (or 'pipeline benchmark import') first")
    if not arch.exists():
        raise PipelineError(f"compare entry '{spec}': no architecture at '{arch}'; run 'pipeline search --target {target}"
                            f"{dev} --space {space.name}' first")
    return table, arch, None


@main.command()
@click.argument("entries", nargs=-1, required=True)
@click.option("--space", "space_name", default="tiny", show_default=True, help="Space of entries that name none.")
@click.option("--out", "root", type=click.Path(path_type=Path), default=Path("pipeline-out"), show_default=True,
              help="Workspace folder.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Where compare.md/.json/.png go [OUT/compare].")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Time every architecture end to end on each of this host's targets that run here.")
@_protocol_options
def compare(entries: tuple[str, ...], space_name: str, root: Path, report_dir: Path | None, measure: bool,
            threads: int, repeats: int, min_repeat_ms: float, row_timeout: float) -> None:
    """Compare architectures searched for different devices, side by side.

    \b
    ENTRY is TARGET/DEVICE[@SPACE] (its table and architecture in the workspace)
    or TABLE.json=ARCHITECTURE.json. Example:
      pipeline compare desktop/host android/host android-executorch/host
    """
    ws = Workspace(root)
    specs = [_compare_spec(e, ws, space_name) for e in entries]
    comparison, files = compare_stage.compare(specs, ws, _protocol(threads, repeats, min_repeat_ms, row_timeout), measure, report_dir)
    click.echo(compare_render.to_text(comparison))
    click.echo("\nwrote " + ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    main()
