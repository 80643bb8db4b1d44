"""How close is the search's memory estimate (pipeline/training/memory.py) to its real peak?

    python perf/search_memory.py                       # the four configurations of docs/search.md
    python perf/search_memory.py --config tiny:64:32:softmax --config fbnet:64:16:sampled

Each configuration (space:resolution:batch:mixing) runs a real `pipeline -v search` for one
epoch in a fresh process, on a small image folder (80 digits images, so that the epoch is a few
steps long) against a table of equal latencies. The process logs its own estimate before it
trains; its real peak is the kernel's maximum resident set size of that process (wait4). The
ratio estimate / peak is printed for the whole process and for what training added above the
process before it (the part the estimate models; the rest it reads).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.training.data import digits_folder

DEFAULT = ("tiny:64:32:softmax", "fbnet:64:16:softmax", "fbnet:64:16:sampled", "proxyless:128:8:softmax")
GiB = 2.0**30


def equal_table(space_name: str, path: Path) -> Path:
    """A table of the space with every row 1 ms: latencies change the Θ loss, not the memory."""
    from benchmarks.table import LatencyTable, Row, required_rows
    from blocks import resolve_space

    table = LatencyTable({"target": "desktop", "device": "host", "unit": "ms"})
    for block, shape in required_rows(resolve_space(space_name)):
        table.add(Row(block, shape, "ok", 1.0, {"count": 3}))
    table.save(path)
    return path


def run(config: str, work: Path, data: Path) -> dict[str, float]:
    space, resolution, batch, mixing = config.split(":")
    table = equal_table(space, work / f"{space}.json")
    cmd = [sys.executable, "-m", "pipeline.cli", "-v", "search", "--space", space, "--resolution", resolution,
           "--batch-size", batch, "--mixing", mixing, "--epochs", "1", "--data", str(data), "--table", str(table),
           "--out", str(work / config.replace(":", "-"))]
    env = {**os.environ, "PIPELINE_MEMORY_AVAILABLE": "1T"}  # estimate and log, never refuse
    log = work / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    text = log.read_text()
    if status != 0:
        raise SystemExit(f"{config}: the search failed:\n{text[-2000:]}")
    m = re.search(r"needs about ([\d.]+) GiB at its peak \(([\d.]+) GiB now\)", text)
    assert m, text[-2000:]
    est, before = float(m.group(1)) * GiB, float(m.group(2)) * GiB
    peak = usage.ru_maxrss * 1024
    return {"estimate": est, "before": before, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", help=f"space:resolution:batch:mixing, repeatable [{', '.join(DEFAULT)}]")
    ap.add_argument("--per-class", type=int, default=8, help="images per class in the folder [8]")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = digits_folder(work / "data", opts.per_class)
        print(f"{'configuration':<26} {'before':>8} {'peak':>8} {'estimate':>9} {'ratio':>6} "
              f"{'added':>8} {'est. added':>10} {'ratio':>6}   (GiB; ratio = estimate / measured)")
        for config in opts.config or DEFAULT:
            start = time.perf_counter()
            r = run(config, work, data)
            added, est_added = r["peak"] - r["before"], r["estimate"] - r["before"]
            print(f"{config:<26} {r['before'] / GiB:8.3f} {r['peak'] / GiB:8.3f} {r['estimate'] / GiB:9.3f} "
                  f"{r['estimate'] / r['peak']:6.2f} {added / GiB:8.3f} {est_added / GiB:10.3f} "
                  f"{est_added / added:6.2f}   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
