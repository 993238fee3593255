"""``make bench``'s cost scenario (9): the same file sent in each mode, and what each costs.

A ``.jsonl`` of N chat prompts to ``gpt-5-mini`` (a model with a flex tier; ``max_tokens`` 64,
``temperature`` 0) goes
through the real handler, in this process, against a local stack (moto) and the fake OpenAI API
(``--latency-ms``; in flex a share of the flex requests, ``--flex-refusals``, is refused with a 429
``resource_unavailable``), once per mode: ``realtime``, ``flex``, ``batch`` and ``auto`` (its
deadline the default 24 hours: it batches; the fake's Batch API answers at once, checked after 1 s).
Reported per mode: the cost per 1,000 answers at genai-prices' rates (the summary's
``estimated_cost_usd``), the wall time, the real-time API calls the fake received, the lines its
batches ran, the flex refusals, and the answers by the tier that served them — each
against the ``realtime`` row measured in the same run (the answer cache off for these rows). Then the
re-upload: the file runs once with the answer cache on, and again with one line changed — the row
is that second upload (its API calls, its cost, the answers it took from the cache). Nothing here
asserts a figure.

Run alone: ``python -m infra.cost_bench --lines 10000``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from infra.event_source import SqsEventSource
from infra.fake_openai import FakeOpenAIConfig, serve_in_thread
from infra.local_aws import deploy, start_moto, stop_moto

__all__ = ["CostRow", "main", "run_costs"]

KEY = "sk-local-cost-bench"
MODEL = "gpt-5-mini"
MODES = ("realtime", "flex", "batch", "auto")


@dataclass
class CostRow:
    mode: str
    answers: int
    failed: int
    cost_usd: float
    wall_s: float
    api_calls: int
    flex_refused: int
    batch_lines: int
    tiers: dict[str, int]

    @property
    def per_1000(self) -> float:
        return 1000 * self.cost_usd / max(1, self.answers)


def _lines(count: int, *, changed: int | None = None) -> bytes:
    """``count`` deterministic prompts (temperature 0: the answer cache keeps them); ``changed``: that line reworded."""

    def line(i: int) -> bytes:
        prompt = f"question {i}: what is {i} + {i}?" + (" Answer in words." if i == changed else "")
        body = {"custom_id": f"q{i}", "model": MODEL, "prompt": prompt, "max_tokens": 64, "temperature": 0}
        return json.dumps(body).encode() + b"\n"

    return b"".join(line(i) for i in range(count))


def run_costs(lines: int, *, latency_ms: float = 50.0, flex_refusals: float = 0.05) -> list[CostRow]:
    """The file through the handler once per mode; one row each."""
    server, endpoint = start_moto()
    rows: list[CostRow] = []
    try:
        stack = deploy(endpoint)
        config = FakeOpenAIConfig(
            latency_ms=latency_ms, require_api_key=KEY, flex_unavailable_rate=flex_refusals, seed=9
        )
        with serve_in_thread(config) as fake:
            os.environ.update(
                stack.function_env(
                    OPENAI_BASE_URL=fake.base_url,
                    POWERTOOLS_LOG_LEVEL="WARNING",
                    POWERTOOLS_METRICS_DISABLED="true",
                    PROMPTDROP_MAX_CONCURRENCY="200",
                    PROMPTDROP_BATCH_POLL_S="1",
                )
            )
            os.environ.pop("OPENAI_API_KEY", None)
            session = boto3.Session(region_name=stack.region)
            s3 = session.client("s3", endpoint_url=endpoint)
            secrets = session.client("secretsmanager", endpoint_url=endpoint)
            with contextlib.closing(s3), contextlib.closing(secrets):
                secrets.put_secret_value(SecretId=stack.secret_arn, SecretString=KEY)
                from promptdrop import runtime  # after the environment is set
                from promptdrop.handler import lambda_handler

                body = _lines(lines)
                try:
                    for mode in MODES:  # each mode pays its own way: the answer cache off
                        metadata = {"promptdrop-mode": mode, "promptdrop-cache": "off"}
                        rows.append(_run(mode, Upload(stack, s3, fake, lambda_handler), body, metadata))
                    rows.append(_reupload(Upload(stack, s3, fake, lambda_handler), lines))
                finally:
                    runtime.shutdown()
    finally:
        stop_moto(server)
    return rows


@dataclass
class Upload:
    """Where a file goes and what runs it: the stack, its S3 client, the fake API, the handler."""

    stack: Any
    s3: Any
    fake: Any
    handler: Any


def _run(name: str, upload: Upload, body: bytes, metadata: dict[str, str], key: str | None = None) -> CostRow:
    """``body`` uploaded and run to its end: its row (the fake's counters are its alone)."""
    stack = upload.stack
    key = key or f"{stack.input_prefix}cost-{name}.jsonl"
    upload.fake.reset()
    started = time.monotonic()
    upload.s3.put_object(Bucket=stack.bucket, Key=key, Body=body, Metadata=metadata)
    base = f"{stack.output_prefix}{key}"
    with SqsEventSource.for_stack(stack) as source:
        source.drain(upload.handler, wait_s=0)
        while not _written(upload.s3, stack.bucket, f"{base}.summary.json"):  # a batch's delayed checks
            time.sleep(0.2)
            source.drain(upload.handler, wait_s=1, idle_polls=1)
    wall = time.monotonic() - started
    summary = _summary(upload.s3, stack.bucket, base)
    stats = upload.fake.stats()
    tiers = dict(summary.get("service_tiers") or {})
    if summary.get("cached"):
        tiers["cached"] = int(summary["cached"])
    counts = summary["counts"]
    cost = float(summary["estimated_cost_usd"] or 0.0)
    batch_lines = sum(stats["batch_prompts"].values())
    return CostRow(
        name,
        counts["succeeded"],
        counts["failed"],
        cost,
        wall,
        stats["requests"],
        stats["flex_unavailable"],
        batch_lines,
        tiers,
    )


def _reupload(upload: Upload, lines: int) -> CostRow:
    """The file run once (its answers kept by the answer cache), then uploaded again with one line changed."""
    key = f"{upload.stack.input_prefix}cost-reupload.jsonl"
    _run("first upload", upload, _lines(lines), {}, key)
    return _run("re-upload", upload, _lines(lines, changed=lines // 2), {}, key)


def _written(s3: Any, bucket: str, key: str) -> bool:
    return int(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0)) > 0


def _summary(s3: Any, bucket: str, base: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=f"{base}.summary.json")["Body"].read())
    return summary


def report(rows: list[CostRow]) -> None:
    base = rows[0]
    print(f"\n(9) cost: the same {base.answers + base.failed:,}-line file ({MODEL}) in each mode, and re-uploaded")
    print("    with one line changed (answer cache on: 're-upload' is the second upload alone)")
    header = (
        f"{'mode':<9} {'answers':>8} {'failed':>6} {'$ / 1,000':>10} {'x realtime':>10} {'wall s':>7} "
        f"{'API calls':>9} {'batch lines':>11} {'flex 429s':>9}  tiers"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row.per_1000 / base.per_1000 if base.per_1000 else float("nan")
        tiers = ", ".join(f"{tier} {count:,}" for tier, count in sorted(row.tiers.items()))
        print(
            f"{row.mode:<9} {row.answers:>8,} {row.failed:>6,} {row.per_1000:>10.5f} {ratio:>10.2f} "
            f"{row.wall_s:>7.1f} {row.api_calls:>9,} {row.batch_lines:>11,} {row.flex_refused:>9,}  {tiers}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cost_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--flex-refusals", type=float, default=0.05, help="share of flex requests refused (429)")
    args = parser.parse_args(argv)
    report(run_costs(args.lines, latency_ms=args.latency_ms, flex_refusals=args.flex_refusals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
