"""The benchmarks' peak RSS is the process's own, not its parent's carried across fork + exec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

PARENT = """
import json, resource, subprocess, sys
held = bytearray(200 * 1024 * 1024)
for i in range(0, len(held), 4096):
    held[i] = 1  # touched: resident
child = "import json, resource; from infra.rss import peak_rss_mb; " \\
    "print(json.dumps([peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout)
"""


def test_a_small_child_of_a_large_parent_reports_its_own_peak() -> None:
    # Given a parent holding 200 MB that starts a small Python process
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, check=True, cwd=ROOT)

    # When the child reads its peak both ways
    own, rusage = json.loads(out.stdout)

    # Then rusage carries the parent's 200 MB, and peak_rss_mb the child's own few MB
    assert rusage >= 200
    assert own < 100
