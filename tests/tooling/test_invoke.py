"""``python -m infra.invoke --peak --baseline``: an invocation's figures, as the memory benchmark reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from infra.invoke import spawn

EVENTS = Path(__file__).parents[2] / "infra" / "events"
# The function's settings with nothing behind them: building the runtime makes clients, it calls nothing.
ENV = {
    **os.environ,
    "PROMPTDROP_TABLE": "jobs",
    "PROMPTDROP_DLQ_URL": "http://127.0.0.1:9/dlq",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "OPENAI_API_KEY": "sk-test",
    "POWERTOOLS_METRICS_DISABLED": "true",
}


def _figures(*options: str) -> dict[str, float]:
    event = json.loads((EVENTS / "sqs-s3-test-event.json").read_text())  # skipped by the handler: nothing to run
    process = spawn(event, ENV, "--peak", *options)
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    assert process.wait() == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines[-2] == {"batchItemFailures": []}
    figures: dict[str, float] = lines[-1]
    return figures


def test_baseline_is_the_rss_with_the_runtime_built_before_the_event() -> None:
    figures = _figures("--baseline")
    assert set(figures) == {"peak_rss_mb", "baseline_rss_mb", "handler_s"}
    # the runtime's clients are in the baseline: a process importing the handler alone is well past 50 MB
    assert 50 < figures["baseline_rss_mb"] <= figures["peak_rss_mb"]
    assert figures["handler_s"] >= 0


def test_without_baseline_only_the_peak_is_printed() -> None:
    assert set(_figures()) == {"peak_rss_mb"}
