"""How well does a latency table reproduce? Compare tables of the same rows measured again.

    pipeline benchmark --target android --space fbnet --force --rounds 5 -q   # then copy the table; repeat
    python perf/table_spread.py TABLE_1.json TABLE_2.json TABLE_3.json

Each table is first scaled by its median ratio to the others (a whole machine running faster
or slower for a while moves every row alike, and the calibration's scale absorbs that); what is
left is each row's own disagreement: (max − min) / median over the tables. It prints the
scales and the median and 90th percentile of that spread over the rows the tables share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.table import load_table  # noqa: E402
from core.errors import PipelineError  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", type=Path, nargs="+")
    opts = ap.parse_args()
    if len(opts.tables) < 2:
        sys.exit("give at least two tables of the same rows to compare")
    try:
        tables = [load_table(p) for p in opts.tables]
    except PipelineError as e:
        sys.exit(str(e))
    keys = sorted(set.intersection(*({k for k, r in t.rows.items() if r.status == "ok"} for t in tables)))
    if not keys:
        sys.exit("the tables share no measured rows; pass tables of the same space and target")
    ms = np.array([[t.rows[k].median_ms for k in keys] for t in tables])
    scales = np.median(ms / np.median(ms, axis=0), axis=1)
    rel = ms / scales[:, None]
    spread = (rel.max(axis=0) - rel.min(axis=0)) / np.median(rel, axis=0) * 100
    print(f"{len(tables)} tables, {len(keys)} rows in common; each table's scale: "
          + " / ".join(f"{s:.3f}" for s in scales))
    print(f"a row's spread over the tables, scale removed: median {np.median(spread):.1f}%, "
          f"90th percentile {np.percentile(spread, 90):.1f}%")


if __name__ == "__main__":
    main()
