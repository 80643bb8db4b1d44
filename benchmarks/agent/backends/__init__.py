"""The agent's backends, registered by name (`pipeline agent --backend NAME`)."""

from benchmarks.agent.backends import adb, iphone, local  # noqa: F401  (registers them)
from benchmarks.agent.backends.base import BACKENDS, Backend, BackendUnavailable, Job, Stored

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "Job", "Stored"]
