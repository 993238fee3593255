"""A process's own peak RSS, for the benchmarks' figures.

``getrusage(RUSAGE_SELF).ru_maxrss`` is not it for a process the benchmarks start: Linux carries
the parent's peak across ``fork`` + ``exec`` into the child's ``ru_maxrss``, so a small invocation
started by a conductor holding 190 MB reports at least 190 MB. The kernel's ``VmHWM`` (the high-water
mark of this process's own memory, from ``exec`` on) is read instead where there is one.
"""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["peak_rss_mb"]


def peak_rss_mb() -> float:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # no /proc (not Linux): the rusage figure, in kB as Linux and the BSDs give it
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # "VmHWM:   123456 kB"
