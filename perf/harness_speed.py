"""How long does a full latency table take to build, cold and with everything cached?

    python perf/harness_speed.py                       # desktop, FBNet's 22-layer space
    python perf/harness_speed.py --target android --target android-executorch

For each target it runs `pipeline benchmark` twice in a fresh workspace: first with an empty
artifact cache (export + check + time every row), then again with `--force` so every row is
re-timed but every artifact comes from the cache, and once more without `--force` (nothing
to do: the resume path). It prints wall-clock seconds and the cold/cached ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", help="target(s) to time [desktop]")
    ap.add_argument("--space", default="fbnet")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    opts = ap.parse_args()
    print(f"space {opts.space}, {os.cpu_count()} cores, {opts.jobs} export workers")
    print(f"{'target':<20} {'cold s':>8} {'cached s':>9} {'resume s':>9} {'cold/cached':>12}")
    for target in opts.target or ["desktop"]:
        with tempfile.TemporaryDirectory() as out:
            common = ["benchmark", "--target", target, "--space", opts.space, "--out", out, "-q", "--jobs", str(opts.jobs)]
            cold = timed(common)
            cached = timed([*common, "--force"])
            resume = timed(common)
            rows = sum(1 for fmt in (Path(out) / "cache").iterdir() for _ in fmt.iterdir())
        print(f"{target:<20} {cold:8.1f} {cached:9.1f} {resume:9.1f} {cold / cached:11.1f}x   ({rows} artifacts)")


if __name__ == "__main__":
    main()
