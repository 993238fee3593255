"""The benchmark's processes, seen from the conductor: a helper server started in a process of its own and
read for the URL it prints, and a contender run in a fresh process (:mod:`infra.bench_contenders`) read
into its :class:`Row` of figures. Shared by every scenario (:mod:`infra.bench`, :mod:`infra.e2e_bench`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Row", "helper_process", "moto_process", "post", "run_contender"]

ROOT = Path(__file__).parents[1]


def post(url: str, method: str = "POST") -> str:
    with urllib.request.urlopen(
        urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    ) as r:  # loopback only
        return str(r.read().decode())


@contextmanager
def helper_process(args: list[str], ready: str) -> Iterator[str]:
    """Start a helper process and yield the URL it prints on its ready line."""
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if ready in line:
                yield line.strip().rsplit(" ", 1)[-1]
                break
        else:
            raise RuntimeError(f"{args} exited before it was ready")
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def moto_process() -> AbstractContextManager[str]:
    """A moto server in a process of its own (``python -m infra.moto_server``); yields its endpoint."""
    return helper_process(["-m", "infra.moto_server"], "moto listening on")


@dataclass
class Row:
    scenario: str
    contender: str
    n: int
    ok: int
    failed: int
    wall_s: float
    cpu_s: float
    peak_mb: float
    rate_limited: int
    calls: dict[str, int]

    @property
    def per_s(self) -> float:
        return self.ok / self.wall_s

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / max(1, self.ok)


def run_contender(scenario: str, contender: str, n: int, server: str, extra: list[str] | None = None) -> Row:
    post(server.removesuffix("/v1") + "/stats/reset")
    env = {**os.environ, "OPENAI_BASE_URL": server, "OPENAI_API_KEY": "sk-bench"}
    out = subprocess.run(
        [sys.executable, "-m", "infra.bench_contenders", contender, "--n", str(n), *(extra or [])],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = json.loads(post(server.removesuffix("/v1") + "/stats", method="GET"))
    row = Row(
        scenario,
        contender,
        n,
        result["ok"],
        result["failed"],
        result["wall_s"],
        result["cpu_s"],
        result["peak_mb"],
        int(stats.get("status", {}).get("429", 0)),
        result["calls"],
    )
    print(
        f"  {scenario:<10} {contender:<15} {n:>7} prompts: {row.per_s:7.0f}/s, {row.cpu_ms:.2f} ms CPU each, "
        f"{row.peak_mb:.0f} MB peak, {row.rate_limited} 429s, {row.failed} failed",
        flush=True,
    )
    return row
