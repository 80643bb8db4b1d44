"""What does timing a table through a measurement agent cost, against timing it here?

    python perf/agent_cost.py                    # tiny on desktop, 3 pairs
    python perf/agent_cost.py --space fbnet --pairs 2

A `pipeline agent` runs on 127.0.0.1 (this machine's runners, the same cores), and the same
table is built with `pipeline benchmark --force`, here and through the agent (`--remote`),
alternately (here first in odd pairs, the agent first in even ones), so the machine's drift
falls on both alike. Every artifact is exported before the first timed build, so both builds
only time. Prints each build's wall-clock seconds, the agent/here ratio of each pair and their
median, and how many artifacts each build through the agent sent (the first sends every one,
later ones none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.agent_server import running_agent  # noqa: E402  (the repository's root, above)


def build(args: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "benchmark", *args, "-q", "--json"],
                       check=True, capture_output=True, text=True)
    return time.perf_counter() - start, json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="desktop")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--pairs", type=int, default=3)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_agent(Path(tmp) / "agent") as agent:
        out = Path(tmp) / "ws"
        common = ["--target", opts.target, "--space", opts.space, "--out", str(out)]
        build([*common, "--table", str(out / "warm.json")])  # exports every artifact into the cache
        here_args = [*common, "--force", "--table", str(out / "here.json")]
        agent_args = [*common, "--force", "--table", str(out / "agent.json"), "--remote", agent.url,
                      "--token-file", str(agent.token_file)]
        print(f"{opts.space} on {opts.target}: {opts.pairs} pairs, here and through the agent at {agent.url}")
        print(f"{'pair':>4} {'here s':>8} {'agent s':>8} {'agent/here':>11} {'sent':>5}")
        ratios = []
        for i in range(opts.pairs):
            if i % 2 == 0:
                here, _ = build(here_args)
                remote, report = build(agent_args)
            else:
                remote, report = build(agent_args)
                here, _ = build(here_args)
            ratios.append(remote / here)
            print(f"{i + 1:>4} {here:8.1f} {remote:8.1f} {remote / here:10.2f}x {report['agent']['artifacts_sent']:>5}")
        print(f"median agent/here: {statistics.median(ratios):.2f}x over {report['rows']} rows")


if __name__ == "__main__":
    main()
