"""Plain-text rendering of each command's result (the CLI prints these)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.context import context_summary
from benchmarks.predict import MIN_CALIBRATION_NETWORKS
from benchmarks.table import LatencyTable, Row
from blocks.space import LayerShape, SearchSpace
from pipeline.training.sweep import SweepReport
from pipeline.training.search import DECIDED, decided_layers
from benchmarks.targets import Target
from pipeline.stages.validate import ValidateReport
from pipeline.stages.benchmark import BenchmarkReport
from pipeline.stages.export import ExportReport
from pipeline.stages.quantized import QuantizedExport
from pipeline.stages.search import SearchReport

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.flow import RunReport

    from benchmarks.agent.server import AgentSettings
    from benchmarks.bundle import Bundle


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def latency_grid(table: LatencyTable, space: SearchSpace) -> str:
    """Layers down, blocks across, each row's ms in each cell ('-' where a block cannot go); the
    fixed parts (stem, head, classifier) in a column of their own, since no block is timed there."""
    # Stages may fix their own candidates, so the columns are every block some layer can take.
    columns = list(dict.fromkeys(b for i in range(len(space.layers)) for b in space.candidates(i)))
    fixed = space.fixed_parts()

    def fixed_row(name: str, shape: LayerShape) -> list[str]:
        return [name, shape.key, *[""] * len(columns), f"{table.latency(name, shape):.4f}"]

    rows = [fixed_row(name, shape) for name, shape in fixed[:1]]
    for i, shape in enumerate(space.layers):
        cells = []
        for b in columns:
            row = table.rows.get(f"{b}/{shape.key}")
            cells.append("-" if row is None or b not in space.candidates(i)
                         else (f"{row.median_ms:.4f}{_flag(row)}" if row.status == "ok" else row.status))
        rows.append([str(i), shape.key, *cells, ""])
    rows += [fixed_row(name, shape) for name, shape in fixed[1:]]
    return _grid(["layer", "shape (in x h x w - out - stride)", *columns, "fixed part"], rows)


IMPLAUSIBLE_MARK = "!"


def _flag(row: Row) -> str:
    return IMPLAUSIBLE_MARK if "implausible" in row.stats else ""


def benchmark_text(r: BenchmarkReport, space: SearchSpace) -> str:
    lines = [
        f"latency table: {r.path}",
        f"  {provenance_line(r.table)}",
        f"  {_counts(r)}; {_statistic(r.table)} ms per block:",
        latency_grid(r.table, space),
    ]
    if r.unavailable:
        lines.append(f"  not measurable: {', '.join(r.unavailable)} (see 'reason' in the table)")
    flagged = _flagged(r.table, "implausible")
    if flagged:
        lines.append(f"  {IMPLAUSIBLE_MARK} implausible: contradicts the table even re-timed ({flagged[0].key}: "
                     f"{flagged[0].stats['implausible']}{f'; {len(flagged) - 1} more' if len(flagged) > 1 else ''}; "
                     "'implausible' in the table says why; 'pipeline benchmark --force' remeasures)")
    return "\n".join(lines)


def _flagged(table: LatencyTable, flag: str) -> list[Row]:
    return [row for row in table.rows.values() if row.status == "ok" and row.stats.get(flag)]


def _short(row: Row) -> str:
    """A row in a few characters: block@CINxHxW."""
    return f"{row.block}@{row.shape.in_ch}x{row.shape.height}x{row.shape.width}"


def benchmark_summary(r: BenchmarkReport) -> str:
    """`benchmark -q`: the table in one line."""
    implausible, wide = _flagged(r.table, "implausible"), _flagged(r.table, "wide")
    names = f" ({', '.join(_short(row) for row in implausible[:3])}{', ...' if len(implausible) > 3 else ''})"
    return (f"table {r.path}: {len(r.table.rows)} rows, {r.measured} measured now, {len(r.table.retimed)} re-timed, "
            f"{len(implausible)} implausible{names if implausible else ''}, {len(wide)} wide"
            + (f", {len(r.unavailable)} not measurable" if r.unavailable else ""))


def _statistic(table: LatencyTable) -> str:
    """What the cells hold: the median of this tool's timings, or a published table's mean."""
    return "/".join(sorted({row.statistic for row in table.rows.values()})) or "median"


def _counts(r: BenchmarkReport) -> str:
    source = r.table.provenance.get("imported_from")
    if isinstance(source, dict) and "bundle" in source:  # timed on the device from a bundle of ours
        return f"{len(r.table.rows)} rows imported, statistic: {r.table.provenance.get('statistic')}"
    if source:
        return f"{len(r.table.rows)} rows imported, statistic: published {r.table.provenance.get('statistic', 'median')}"
    counts = f"{r.measured} row(s) measured now, {len(r.table.rows) - r.measured} reused"
    ref, in_context = r.table.reference, context_summary(r.table)
    if in_context:
        counts += f"; {in_context}"
    if ref and ref.get("median_ms"):
        counts += f"; each as its ratio to {ref.get('row')} (timed beside it, {ref['median_ms']:.4g} ms)"
    return counts


def provenance_line(table: LatencyTable) -> str:
    """Where and how a table was measured, in one line."""
    p = table.provenance
    where = f"{p.get('target')}/{p.get('device')}"
    host = p.get("host")
    if isinstance(host, dict) and "agent" in host:  # timed on an agent's device
        return (f"{where} on {host.get('model')} ({host.get('os')}, '{host.get('id')}' at the agent {host.get('agent')}), "
                f"{p.get('runtime')} {p.get('runtime_version')}, {p.get('threads')} thread(s)")
    if isinstance(host, dict):
        return (f"{where} on {host.get('cpu')} ({host.get('cores')} cores, {host.get('os')}), "
                f"{p.get('runtime')} {p.get('runtime_version')}, {p.get('threads')} thread(s)")
    source = p.get("imported_from")
    name = source.get("file", "?") if isinstance(source, dict) else source
    return f"{where}, imported from {name} ({p.get('source', 'unknown source')})"


# Blocks timed alone miss what happens between them in a whole network (over-predicting FBNet
# networks here by 18-42%): say how to get the better predictor wherever the plain sum is shown.
PLAIN_SUM_HINT = ("the table sum adds blocks timed alone; 'pipeline validate' (same --target and --space) "
                  "times whole networks and fits a calibration that search and export then use")


def search_text(r: SearchReport) -> str:
    info, space = r.architecture.info, r.architecture.space
    rows = []
    for i, (b, alpha) in enumerate(zip(r.architecture.blocks, info["alpha"])):
        other = runner_up(alpha, b)
        rows.append([str(i), space.layers[i].key, b, f"{alpha[b]:.3f}",
                     "-" if other is None else f"{other[0]} {other[1]:.3f}"])
    lat = info["latency"]
    return "\n".join([
        f"derived architecture: {r.path}",
        _grid(["layer", "shape", "block", "alpha", "runner-up"], rows),
        f"predicted latency {r.predicted_ms:.4f} ms on {info['table']['target']}/{info['table']['device']} "
        f"by {lat['predictor']} (space spans {lat['space_fastest_ms']:.4f} to {lat['space_slowest_ms']:.4f} ms)",
        *_target_lines(info),
        *([PLAIN_SUM_HINT] if lat["predictor"] == "table sum" and info["table"]["device"] == "host" else []),
        f"decided in {decided_layers(info['alpha'])} of {len(info['alpha'])} layers (the chosen block's α at least "
        f"{DECIDED:g}x the runner-up's)",
        f"test accuracy: super-net {info['supernet_test_accuracy']:.3f}, derived network with inherited "
        f"weights {r.derived_test_acc:.3f} (retrain from scratch with 'pipeline train')",
    ])


def runner_up(alpha: dict[str, float], chosen: str) -> tuple[str, float] | None:
    """The most likely block other than the chosen one (None where the layer has no other).

    Under a latency target the chosen block need not be the most likely, so the runner-up is
    not simply the second highest α: that could be the chosen block itself.
    """
    others = [(name, a) for name, a in alpha.items() if name != chosen]
    return max(others, key=lambda kv: kv[1]) if others else None


def _target_lines(info: dict) -> list[str]:
    t = info.get("latency_target")
    if t is None:
        return []
    pred, goal = info["predicted_latency_ms"], t["target_ms"]
    verdict = (f"meets the latency target {goal:g} ms ({pred / goal - 1:+.1%})" if t["met"]
               else f"MISSES the latency target {goal:g} ms by {pred - goal:.4f} ms ({pred / goal - 1:+.1%})")
    changed = t["layers_changed_to_meet_it"]
    how = (f"; the most likely architecture ({t['argmax_latency_ms']:.4f} ms) was over it, so layers "
           f"{', '.join(map(str, changed))} took other blocks: the most likely combination that fits") if changed else ""
    return [verdict + how]


def export_text(r: ExportReport) -> str:
    lines = [f"exported: {r.artifact.path} ({r.artifact.format}), weights: {r.weights_source}"
             + (f", test accuracy {r.test_accuracy:.3f}" if r.test_accuracy is not None else "")]
    if r.sidecar is not None and r.app is not None:
        shown = ", ".join(r.app.labels[:5]) + (", ..." if len(r.app.labels) > 5 else "")
        lines.append(f"for an app: {r.sidecar} states its {len(r.app.labels)} labels ({shown}), its preprocessing "
                     "and its input and output tensors (docs/app.md)")
    if r.check is not None:
        lines.append(f"check against PyTorch: max abs error {r.check.max_abs_err:.2e} (output magnitude {r.check.max_ref:.2f})")
    if r.quantized is not None:
        lines.extend(quantized_lines(r.quantized))
    if r.measured is not None:
        m = r.measured
        lines.append(f"measured end to end: {m['median_ms']:.4f} ms median (p10 {m['p10_ms']:.4f}, p90 {m['p90_ms']:.4f}, "
                     f"{m['count']} repeats x {m['number']} calls)")
        if "at_calibration_speed_ms" in m:
            way = "longer" if m["reference_vs_calibration"] >= 1 else "less"
            lines.append(f"at the calibration's speed: {m['at_calibration_speed_ms']:.4f} ms (timed beside the network "
                         f"its fit was timed against, which took {abs(m['reference_vs_calibration'] - 1) * 100:.1f}% "
                         f"{way} than then)")
    if r.not_measured_because is not None:
        lines.append(f"checked with the converter's tools only; not run or timed here: {r.not_measured_because}")
    elif r.measured is None:
        lines.append(f"not timed here: the prediction is for {r.device}; 'pipeline validate --target {r.target} --device "
                     f"{r.device} --arch {r.arch_path}' puts it in a bundle to time there")
    if r.predicted_ms is not None:
        at = " at the calibration's speed" if r.measured is not None and "at_calibration_speed_ms" in r.measured else ""
        err = f", {r.error_pct:+.1f}% vs measured{at}" if r.error_pct is not None else ""
        lines.append(f"predicted ({r.predictor}): {r.predicted_ms:.4f} ms{err} (table {r.table_path})")
        if r.predictor == "table sum" and r.measured is not None:
            lines.append(PLAIN_SUM_HINT)
    if r.operations_estimated:
        lines.append("costliest operations, ESTIMATED (the device's compute plan shares each prediction's time out by "
                     "estimated cost):")
        for op in r.operations_estimated[:8]:
            ms = op.get("estimated_median_ms")
            lines.append(f"  {op.get('operation')} {op.get('path')}: "
                         + (f"~{ms:.4f} ms" if isinstance(ms, (int, float)) else "no estimate")
                         + (f" on {op['compute_device']}" if op.get("compute_device") else ""))
    return "\n".join(lines)


def quantized_lines(q: QuantizedExport) -> list[str]:
    """An 8-bit export: how it was quantized, and what it kept of the float model."""
    how = q.quantization
    lines = [f"quantized to {how.precision} by {how.quantizer}: {how.scheme}"
             + (f"; calibrated on {how.calibration}" if how.calibration else "")]
    if q.quality is None:
        lines.append(f"not checked against the float model here: {q.not_checked_because}")
        return lines
    c = q.quality
    lines.append(f"against the float model on {c.samples} held-out images: top-1 agreement {c.agreement:.1%}, accuracy "
                 f"{c.float_accuracy:.3f} -> {c.quantized_accuracy:.3f} ({c.accuracy_change * 100:+.1f} points), "
                 f"SQNR {c.sqnr_db:.1f} dB")
    return lines


def targets_text(targets: list[Target]) -> str:
    """Each target and what it can do, all read from its exporter's and runner's classes."""
    from export import EXPORTERS

    lines = []
    for t in targets:
        export_here = t.exportable_here()
        measure_here = t.measurable_here()
        options = {**t.exporter_options, **t.runner_options}
        lines.append(f"{t.name:<19} {t.description}")
        exporter, runner = EXPORTERS.get(t.exporter), t.runner_class()
        lines.append(f"{'':<19} exporter {t.exporter} ({exporter.format}, {exporter.suffix}), runner {t.runner} "
                     f"({runner.runtime})"
                     + (f", options {', '.join(f'{k}={v}' for k, v in options.items())}" if options else ""))
        lines.append(f"{'':<19} export here: {'yes' if export_here is None else 'no, ' + export_here}; "
                     f"measure here: {'yes' if measure_here is None else 'no, ' + measure_here}")
        tool = runner.device_tool
        lines.append(f"{'':<19} on a device: "
                     + (f"a bundle's script times it with {tool.name} over adb" if tool
                        else "a bundle to time by hand (its README says how)"))
    return "\n".join(lines)


_DRIFT_VERDICTS = {
    "fits": "the table still describes this machine",
    "stale": "the table no longer describes this machine's speed; re-measure it with 'pipeline benchmark --force' "
             "(same --target, --space and --table)",
    "spell": "some passes agree with the table, so the machine ran {way} for a while; validate again later before "
             "re-measuring the table",
}


def validate_text(r: "ValidateReport") -> str:
    held = sum(not s.fitted for s in r.samples)
    where = f" on {r.measured_on} (brought in from {r.measurements})" if r.measured_on else " end to end"
    lines = [f"{len(r.samples)} networks timed{where}; {held} held out from any fit (table {r.table_path})"]
    if r.missing:
        lines.append(f"not measured, left out: {', '.join(r.missing)}")
    header = ["predictor", "median |err| %", "within 5%", "within 10%", "max |err| %", "spearman"]
    rows = [[name, f"{m['median_abs_err_pct']:.1f}", f"{m['within_5_pct']:.0f}%", f"{m['within_10_pct']:.0f}%",
             f"{m['max_abs_err_pct']:.1f}", f"{m['spearman']:.3f}"] for name, m in r.metrics.items()]
    lines.append(_grid(header, rows))
    if r.drift is not None:
        d = r.drift
        lines.append(f"drift: {d['rows']} table rows re-timed around every round run {(d['median'] - 1) * 100:+.1f}% "
                     f"against the table (passes {(d['min'] - 1) * 100:+.1f}% to {(d['max'] - 1) * 100:+.1f}%): "
                     + _DRIFT_VERDICTS[d["verdict"]].format(way="slower" if d["median"] > 1 else "faster"))
    who = f"{r.measured_on}'s" if r.measured_on else "this machine's"
    if r.noise is not None:
        lines.append(f"noise: the same network's {r.noise['rounds']} rounds differ by a median of "
                     f"{r.noise['median_pct']:.1f}% (worst {r.noise['max_pct']:.1f}%), so each measurement, the "
                     f"median of its rounds, is uncertain by about ±{r.noise['median_se_pct']:.1f}% "
                     f"(standard error): errors of that size are {who}, not the table's")
        if "raw_median_pct" in r.noise:
            lines.append(f"       each as its ratio to a reference network timed beside it, repeat by repeat (as timed, "
                         f"{r.noise['raw_median_pct']:.1f}% apart: the machine's speed moved under all of them)")
        if r.noise["retimed"] and not r.measured_on:  # a device's times come as they were taken there
            lines.append(f"       {r.noise['retimed']} network(s) whose rounds differed by more than "
                         f"{r.noise['retime_above_pct']:.0f}% were timed "
                         "again; their measurement is the median of all their rounds")
    c = r.calibration
    if r.refused is not None:
        lines.append(f"calibration refused, not stored: {r.refused.reason}; {r.refused.advice}")
    if c is None and r.not_fitted:
        lines.append(f"calibration: none fitted: {r.not_fitted} (--samples {2 * MIN_CALIBRATION_NETWORKS} or more); "
                     "predictions are the plain table sum")
    elif c is None:
        lines.append("calibration: none, so predictions are the plain table sum; 'pipeline validate --fit' "
                     f"(--samples {2 * MIN_CALIBRATION_NETWORKS} or more) fits one")
    elif c.is_identity:
        lines.append(f"calibration: no fit beat the plain table sum out of sample ({c.fitted_on} networks); "
                     "predictions keep the plain sum")
    else:
        terms = " + per-block terms" if c.per_block_ms else ""
        when = "fitted now on" if r.fitted_now else f"stored in the table{f' {c.created}' if c.created else ''}, fitted on"
        lines.append(f"calibration: {c.intercept_ms:+.4f} ms + {c.scale:.3f} x table sum{terms} "
                     f"({when} {c.fitted_on} networks); search and predictions use it")
    lines.append(f"wrote {', '.join(str(p) for p in r.files.values())}")
    return "\n".join(lines)


def _bundle_what(b: Bundle) -> str:
    if b.kind == "benchmark":
        return f"{len(b.networks)} blocks of '{b.space}' for {b.target}"
    n_fit = sum(n.fits for n in b.networks)
    role = f"{n_fit} fit a calibration, {len(b.networks) - n_fit} judge it" if b.fit else "all judge the table's prediction"
    return f"{len(b.networks)} networks for {b.target} ({role})"


def bundle_text(b: Bundle) -> str:
    """What `validate` or `benchmark --device NAME` wrote, and the commands that finish the job."""
    from benchmarks.bundle import CSV_NAME, LOGS, SCRIPT, bundle_command, device_tool

    lines = [f"{b.device} is not this machine, so the {b.item}s go to a bundle to time there: {_bundle_what(b)} in "
             f"{b.folder}"]
    tool = device_tool(b.runner)
    if tool is not None:
        lines += [f"time them on the device:  sh {b.folder / SCRIPT}   (adb and {tool.tool})",
                  f"then:                     {bundle_command(b, b.folder / LOGS)}",
                  f"(or write the times into {b.folder / CSV_NAME} and pass that)"]
    else:
        lines += [f"time them on the device ({b.folder / 'README.txt'} says how) and write the times into "
                  f"{b.folder / CSV_NAME} ({b.item},ms; one row per round)",
                  f"then: {bundle_command(b, b.folder / CSV_NAME)}"]
    return "\n".join(lines)


def search_summary(r: SearchReport) -> str:
    """`search -q`: the derived architecture in one line."""
    info = r.architecture.info
    t = info.get("latency_target")
    goal = "" if t is None else f", {'meets' if t['met'] else 'MISSES'} the target {t['target_ms']:g} ms"
    return (f"architecture {r.path}: predicted {r.predicted_ms:.4f} ms on {info['table']['target']}/"
            f"{info['table']['device']} ({info['latency']['predictor']}){goal}, derived test accuracy "
            f"{r.derived_test_acc:.3f}")


def sweep_summary(r: SweepReport) -> str:
    """`search --sweep -q`: the sweep in one line."""
    return (f"sweep: {len(r.points)} networks, {len(r.front)} on the Pareto front; wrote "
            + ", ".join(str(f) for f in r.files.values()))


def validate_summary(r: ValidateReport) -> str:
    """`validate -q`: the best predictor's held-out error in one line."""
    held = sum(not s.fitted for s in r.samples)
    name, best = min(r.metrics.items(), key=lambda kv: kv[1]["median_abs_err_pct"], default=("none", None))
    how = (f"{name}: median |err| {best['median_abs_err_pct']:.1f}%, {best['within_10_pct']:.0f}% within 10%"
           if best else "no held-out network to judge")
    return f"{len(r.samples)} networks timed, {held} held out; {how}; wrote {', '.join(str(p) for p in r.files.values())}"


def export_summary(r: ExportReport) -> str:
    """`export -q`: the artifact, its time and its prediction in one line."""
    measured = f", measured {r.measured['median_ms']:.4f} ms" if r.measured is not None else ", not timed here"
    predicted = (f", predicted {r.predicted_ms:.4f} ms ({r.predictor}"
                 + (f", {r.error_pct:+.1f}%)" if r.error_pct is not None else ")") if r.predicted_ms is not None else "")
    return f"exported {r.artifact.path} ({r.artifact.format}){measured}{predicted}"


def run_summary(r: RunReport) -> str:
    """`run -q`: the table's state, the architecture and the exported network in one line."""
    table = "" if r.benchmark is None else benchmark_summary(r.benchmark).split(": ", 1)[1] + "; "
    trained = f", trained {r.train.test_accuracy:.3f}" if r.train is not None else ""
    return f"{table}{search_summary(r.search)}{trained}; {export_summary(r.export)}"


def bundle_line(b: Bundle) -> str:
    """A bundle in one line (-q): where it is and the command that reads the times back."""
    from benchmarks.bundle import CSV_NAME, LOGS, bundle_command, device_tool

    then = bundle_command(b, b.folder / (LOGS if device_tool(b.runner) is not None else CSV_NAME))
    return f"bundle {b.folder}: {_bundle_what(b)} to time on {b.device}; then: {then}"


def sweep_text(r: SweepReport) -> str:
    rows = [[p.label, f"{p.predicted_ms:.4f}", f"{p.accuracy:.3f}", "*" if p.pareto else "", " ".join(p.blocks)]
            for p in sorted(r.points, key=lambda p: (p.kind != "search", p.predicted_ms))]
    return "\n".join([
        _grid(["point", "pred ms", "accuracy", "front", "blocks"], rows),
        "Pareto front (* above): " + ", ".join(f"{p.label} ({p.predicted_ms:.3f} ms, {p.accuracy:.3f})" for p in r.front),
        "written: " + ", ".join(str(f) for f in r.files.values()),
    ])


def agent_text(url: str, token: str, source: str, token_file: Path | None, settings: AgentSettings) -> str:
    """What `pipeline agent` prints once it listens: where, the token, its devices, how to use it."""
    lines = [f"pipeline agent listening on {url}", f"token ({source}): {token}"]
    for d in (info for _, info in settings.devices.values()):
        runtimes = ", ".join(f"{k} {v}" for k, v in d.runtimes.items())
        lines.append(f"  device {d.id} ({d.backend}): {d.model}, {d.os}; runners {', '.join(d.runners) or 'none'}"
                     + (f" [{runtimes}]" if runtimes else ""))
    for backend, why in settings.unavailable.items():
        lines.append(f"  backend {backend}: {why}")
    if not settings.devices:
        lines.append("  no device to measure on yet: it is listed again on every request")
    tf = str(token_file) if token_file else "TOKEN_FILE"
    lines.append(f"use it: pipeline benchmark --target TARGET --remote {url} --token-file {tf}"
                 + ("" if token_file else "  (save the token above in TOKEN_FILE)"))
    lines.append("Ctrl-C stops it; artifacts it received stay in its store for the next start")
    return "\n".join(lines)
