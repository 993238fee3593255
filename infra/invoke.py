"""Invoke the real handler once, in this process, like one fresh Lambda container.

``python -m infra.invoke < event.json`` reads an event from standard input, runs
``promptdrop.handler.lambda_handler`` with a local context (``--timeout-s``, default 900) and prints
the response as JSON. The environment must already hold the function's configuration (see
``LocalAws.function_env``). Tests use it to run several "containers" at once, and to kill one
mid-run. ``--peak`` prints the process's peak RSS last; with ``--baseline`` the container's runtime
(its clients) is built before the event and the RSS then, and the handler's seconds, are printed too:
what the invocation's work itself added.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.event_source import LocalContext
from infra.rss import peak_rss_mb

__all__ = ["finished", "invocation_env", "main", "spawn"]

ROOT = Path(__file__).parents[1]


def invocation_env(stack: Any, server: str, **overrides: str) -> dict[str, str]:
    """The environment of a benchmark's invocation: this process's, less its ``PROMPTDROP_*``, plus the
    stack's function environment against the fake API at ``server`` (no secret, no metrics)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTDROP_")}
    common = {
        "PROMPTDROP_OPENAI_SECRET_ARN": "",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "OPENAI_BASE_URL": server,
        "OPENAI_API_KEY": "sk-bench",
    }
    return {**base, **stack.function_env(**common, **overrides)}


def spawn(event: Mapping[str, Any], env: Mapping[str, str], *options: str) -> subprocess.Popen[str]:
    """Invoke the handler with ``event`` in a new process (another container) with ``env``; its
    standard output (the response, last) is a pipe. ``options``: this module's, e.g. ``--peak``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.invoke", *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=ROOT,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(event))
    process.stdin.close()
    return process


def finished(process: subprocess.Popen[str]) -> tuple[Any, dict[str, Any]]:
    """A spawned invocation's response and its figures (``--peak``, ``--baseline``), once it has ended;
    one that failed, or handed its message back, raises."""
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    if process.wait() != 0:
        raise RuntimeError(f"an invocation failed:\n{out[-3000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    response, figures = lines[-2], lines[-1]
    if response.get("batchItemFailures"):  # (an S3 event's answer is the jobs it ran)
        raise RuntimeError(f"an invocation handed its message back: {response}")
    return response, figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.invoke", description="invoke the handler once")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="the invocation's time limit")
    parser.add_argument("--peak", action="store_true", help="print the process's peak RSS (MB) last, as JSON")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="build the runtime before the event; with --peak, print the RSS then and the handler's seconds too",
    )
    args = parser.parse_args(argv)
    from promptdrop import runtime
    from promptdrop.handler import lambda_handler
    from promptdrop.settings import get_settings

    event = json.load(sys.stdin)
    figures: dict[str, float] = {}
    try:
        if args.baseline:  # the runtime the handler then finds built: the container as a warm start has it
            runtime.run(runtime.get_runtime(get_settings()))
            figures["baseline_rss_mb"] = peak_rss_mb()
        started = time.perf_counter()
        response = lambda_handler(event, LocalContext(timeout_s=args.timeout_s))
        figures["handler_s"] = time.perf_counter() - started
    finally:
        runtime.shutdown()
    print(json.dumps(response, default=str), flush=True)
    if args.peak:
        print(json.dumps({"peak_rss_mb": peak_rss_mb(), **(figures if args.baseline else {})}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
