"""One timing run at a time per machine: a real second process holds the lock."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from benchmarks import exclusive
from benchmarks.exclusive import LOCK_ENV, timing_alone

pytestmark = pytest.mark.skipif(exclusive.fcntl is None, reason="no flock on this platform")

ROOT = Path(__file__).resolve().parents[1]
HOLD = "from benchmarks.exclusive import timing_alone\nwith timing_alone('pipeline validate --target android'):\n" \
       "    print('held', flush=True)\n    input()\n"


@pytest.fixture
def holder(tmp_path, monkeypatch):
    """Another process timing on this machine: it holds the lock until its stdin closes or it is killed."""
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "timing.lock"))
    p = subprocess.Popen([sys.executable, "-c", HOLD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield p
    p.kill()
    p.wait()


def _enter_in_thread() -> tuple[threading.Thread, threading.Event]:
    entered = threading.Event()

    def run():
        with timing_alone("second"):
            entered.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, entered


def test_a_second_run_waits_for_the_first_and_says_for_which(holder, caplog):
    with caplog.at_level(logging.WARNING):
        t, entered = _enter_in_thread()
        assert not entered.wait(1.0)  # still held by the other process
        assert f"waiting for another run timing on this machine (pid {holder.pid}: pipeline validate --target " \
               "android) to finish" in caplog.text
        holder.kill()  # however the holder ends, the kernel drops its lock
        assert entered.wait(30.0)
    t.join(5)


def test_the_lock_is_reentrant_within_a_process(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "timing.lock"))
    done = threading.Event()

    def nested():
        with timing_alone("outer"), timing_alone("inner"):  # a timed export inside a timed workflow
            done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(30.0)
    with timing_alone("again"):  # and released afterwards
        assert (tmp_path / "timing.lock").read_text().endswith(": again")


def test_off_times_without_waiting(holder, monkeypatch):
    monkeypatch.setenv(LOCK_ENV, "off")
    t, entered = _enter_in_thread()
    assert entered.wait(30.0)
