"""What this host is, so a table timed here can never pass for a phone's."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

HOST_DEVICE = "host"  # the default device name: "where this command runs"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_info() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
