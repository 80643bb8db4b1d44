"""Plain-text rendering of each command's result (the CLI prints these)."""

from __future__ import annotations

from benchmarks.table import LatencyTable
from blocks.space import SearchSpace
from pipeline.workflow import BenchmarkReport, ExportReport, SearchReport


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def latency_grid(table: LatencyTable, space: SearchSpace) -> str:
    """Layers down, blocks across, median ms in each cell ('-' where a block cannot go)."""
    rows = []
    for name, shape in space.fixed_parts()[:1]:
        rows.append([name, shape.key, f"{table.latency(name, shape):.4f}"] + [""] * (len(space.blocks) - 1))
    for i, shape in enumerate(space.layers):
        cells = []
        for b in space.blocks:
            row = table.rows.get(f"{b}/{shape.key}")
            cells.append("-" if row is None or b not in space.candidates(i)
                         else (f"{row.median_ms:.4f}" if row.status == "ok" else row.status))
        rows.append([str(i), shape.key, *cells])
    for name, shape in space.fixed_parts()[1:]:
        rows.append([name, shape.key, f"{table.latency(name, shape):.4f}"] + [""] * (len(space.blocks) - 1))
    return _grid(["layer", "shape (in x h x w - out - stride)", *space.blocks], rows)


def benchmark_text(r: BenchmarkReport, space: SearchSpace) -> str:
    p = r.table.provenance
    lines = [
        f"latency table: {r.path}",
        f"  {p['target']}/{p['device']} on {p['host']['cpu']} ({p['host']['cores']} cores, {p['host']['os']}), "
        f"{p['runtime']} {p['runtime_version']}, {p['threads']} thread(s)",
        f"  {r.measured} row(s) measured now, {len(r.table.rows) - r.measured} reused; median ms per block:",
        latency_grid(r.table, space),
    ]
    if r.unavailable:
        lines.append(f"  not measurable: {', '.join(r.unavailable)} (see 'reason' in the table)")
    return "\n".join(lines)


def search_text(r: SearchReport) -> str:
    info, space = r.architecture.info, r.architecture.space
    rows = []
    for i, (b, alpha) in enumerate(zip(r.architecture.blocks, info["alpha"])):
        runner_up = sorted(alpha.items(), key=lambda kv: -kv[1])[1] if len(alpha) > 1 else ("", 0.0)
        rows.append([str(i), space.layers[i].key, b, f"{alpha[b]:.3f}", f"{runner_up[0]} {runner_up[1]:.3f}"])
    lat = info["latency"]
    return "\n".join([
        f"derived architecture: {r.path}",
        _grid(["layer", "shape", "block", "alpha", "runner-up"], rows),
        f"predicted latency {r.predicted_ms:.4f} ms on {info['table']['target']}/{info['table']['device']} "
        f"(space spans {lat['space_fastest_ms']:.4f} to {lat['space_slowest_ms']:.4f} ms)",
        f"test accuracy: super-net {info['supernet_test_accuracy']:.3f}, derived network with inherited "
        f"weights {r.derived_test_acc:.3f} (retrain from scratch with 'pipeline train')",
    ])


def export_text(r: ExportReport) -> str:
    lines = [f"exported: {r.artifact.path} ({r.artifact.format}), weights: {r.weights_source}"
             + (f", test accuracy {r.test_accuracy:.3f}" if r.test_accuracy is not None else "")]
    if r.check is not None:
        lines.append(f"check against PyTorch: max abs error {r.check.max_abs_err:.2e} (output magnitude {r.check.max_ref:.2f})")
    if r.measured is not None:
        m = r.measured
        lines.append(f"measured end to end: {m['median_ms']:.4f} ms median (p10 {m['p10_ms']:.4f}, p90 {m['p90_ms']:.4f}, "
                     f"{m['count']} repeats x {m['number']} calls)")
    if r.predicted_ms is not None:
        err = f", {r.error_pct:+.1f}% vs measured" if r.error_pct is not None else ""
        lines.append(f"table predicted: {r.predicted_ms:.4f} ms{err} (table {r.table_path})")
    return "\n".join(lines)
