"""A real `pipeline agent` process on 127.0.0.1 for tests: started on a free port, stopped (or
killed) by the test, never left running."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

STARTUP_S = 120.0  # importing torch and the runtimes on a busy 2-core machine


@dataclass
class Agent:
    process: subprocess.Popen
    url: str
    token_file: Path
    store: Path
    log: Path

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no cleanup runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_agent(folder: Path, *args: str, port: int = 0) -> Agent:
    """`pipeline agent` in a child process, once it listens. The token file and the store live in
    `folder` (a restart with the same folder keeps both)."""
    folder.mkdir(parents=True, exist_ok=True)
    token_file, store, log = folder / "token.txt", folder / "store", folder / f"agent-{time.monotonic_ns()}.log"
    out = log.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "agent", "--host", "127.0.0.1", "--port", str(port),
                                "--token-file", str(token_file), "--store", str(store), *args],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        m = re.search(r"listening on (http\S+)", log.read_text())
        if m:
            return Agent(process, m.group(1), token_file, store, log)
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited with {process.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the agent did not start within {STARTUP_S:.0f} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_agent(folder: Path, *args: str) -> Iterator[Agent]:
    agent = start_agent(folder, *args)
    try:
        yield agent
    finally:
        agent.stop()
