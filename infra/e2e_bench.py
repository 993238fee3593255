"""``make bench``'s scenario 8: one large file end to end through shards, as Lambda would run it.

A ``.jsonl`` of N lines is uploaded to a local stack (moto); the real handler, in a process of its
own for every invocation (``python -m infra.invoke --peak``), plans it into shards, runs every
shard (two at a time: this machine's cores), runs every continuation a shard queues when its
invocation's time runs out (``--timeout-s``, as Lambda's limit), and the last shard to finish
writes the outputs. Against the fake OpenAI API, with no rate limit.

Reported: each invocation's peak RSS (the planning one, each shard's runs, the finalizing one),
the DynamoDB and all AWS calls per 1,000 answers (moto's own counter), the answers, and the wall
time. Run alone: ``python -m infra.e2e_bench --lines 1000000``.

The moto server sets the pace at that size, not the function: its ``Query`` reads every item of
the table for each page it answers, so the finalizer's pass over a million request items (about
300 pages, about 10 s each at that size) takes about an hour there; DynamoDB reads only the page.
``make bench`` runs 100,000 lines; the finalizer's memory at a million lines is scenario 7's
"writing the outputs".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.event_source import SqsEventSource
from infra.invoke import spawn
from infra.local_aws import deploy

__all__ = ["E2eRow", "run_e2e"]

ROOT = Path(__file__).parents[1]
PARALLEL = 2


@dataclass
class E2eRow:
    lines: int
    shards: int
    succeeded: int = 0
    failed: int = 0
    invocations: list[tuple[str, float]] = field(default_factory=list)  # (what it ran, peak RSS MB)
    calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    answered_once: int = 0  # prompts the fake API answered exactly once
    answered_again: int = 0  # prompts it answered more than once (paid twice)

    @property
    def ddb_calls(self) -> int:
        return sum(v for k, v in self.calls.items() if k.startswith("DynamoDB"))

    @property
    def peak_mb(self) -> float:
        return max(mb for _, mb in self.invocations)


def _invoke(event: dict[str, Any], env: dict[str, str], timeout_s: float) -> subprocess.Popen[str]:
    return spawn(event, env, "--peak", "--timeout-s", str(timeout_s))


def _finish(process: subprocess.Popen[str]) -> tuple[Any, float]:
    """The invocation's response and its peak RSS in MB."""
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    if process.wait() != 0:
        raise RuntimeError(f"an invocation failed:\n{out[-3000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    response, peak = lines[-2], lines[-1]["peak_rss_mb"]
    if response.get("batchItemFailures"):  # (an S3 event's answer is the jobs it ran)
        raise RuntimeError(f"an invocation handed its message back: {response}")
    return response, float(peak)


def _take_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        got += batch
    return got


def run_e2e(*, server: str, moto: str, lines: int, shards: int, concurrency: int, timeout_s: float) -> E2eRow:
    stack = deploy(moto, stack_name=f"e2e{os.getpid()}x{int(time.time() * 1000) % 10**8}")
    key = f"{stack.input_prefix}e2e-{lines}.jsonl"
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    with tempfile.TemporaryFile() as file:  # written and uploaded a line at a time
        for i in range(lines):
            file.write(json.dumps({"custom_id": f"req-{i:07d}", "prompt": f"e2e {i}: odd or even?"}).encode() + b"\n")
        size = file.tell()
        file.seek(0)
        s3.upload_fileobj(file, stack.bucket, key)
    overrides = {
        "PROMPTDROP_MAX_CONCURRENCY": str(concurrency),
        "PROMPTDROP_SHARD_BYTES": str(size // shards + 1),
        "PROMPTDROP_OPENAI_SECRET_ARN": "",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "OPENAI_BASE_URL": server,
        "OPENAI_API_KEY": "sk-bench",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTDROP_")}
    env = {**base, **stack.function_env(**overrides)}
    row = E2eRow(lines=lines, shards=shards)
    started = time.perf_counter()
    with SqsEventSource.for_stack(stack) as source:
        _take_all(sqs, stack.work_queue_url)  # S3's test event and the upload's notification
        s3_record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": stack.bucket}, "object": {"key": key}}}
        _moto_calls(moto, reset=True)
        _, peak = _finish(_invoke({"Records": [s3_record]}, env, timeout_s))
        row.invocations.append(("planning", peak))
        print(f"  8: e2e {lines:,} lines: planned, peak RSS {peak:.0f} MB", flush=True)
        waves = 0
        while messages := _take_all(sqs, stack.work_queue_url):
            waves += 1
            for start in range(0, len(messages), PARALLEL):
                batch = messages[start : start + PARALLEL]
                runs = [(json.loads(m["Body"]), _invoke(source.build_event([m]), env, timeout_s)) for m in batch]
                for body, run in runs:
                    _, peak = _finish(run)
                    what = f"{body['unit']}" + (f" (continuation {body['hops']})" if body.get("hops") else "")
                    row.invocations.append((what, peak))
                    print(f"  8: e2e {lines:,} lines: {what} done, peak RSS {peak:.0f} MB", flush=True)
    row.seconds = time.perf_counter() - started
    row.calls = _moto_calls(moto)
    summary = json.loads(
        s3.get_object(Bucket=stack.bucket, Key=f"{stack.output_prefix}{key}.summary.json")["Body"].read()
    )
    row.succeeded, row.failed = summary["counts"]["succeeded"], summary["counts"]["failed"]
    request = urllib.request.Request(server.removesuffix("/v1") + "/stats")
    with urllib.request.urlopen(request) as response:  # loopback only
        answered = list(json.load(response)["prompts_ok"].values())
    row.answered_once, row.answered_again = answered.count(1), sum(1 for n in answered if n > 1)
    sqs.close()
    s3.close()
    return row


def _moto_calls(moto: str, *, reset: bool = False) -> dict[str, int]:
    """The moto server's count of the calls it received, by operation (``reset``: start again)."""
    request = urllib.request.Request(f"{moto}/_local/calls", method="POST" if reset else "GET")
    with urllib.request.urlopen(request, data=b"" if reset else None) as response:  # loopback only
        calls: dict[str, int] = json.load(response)
        return calls


# What the bench's own event source calls (receiving and deleting the work messages): not the function's.
_EVENT_SOURCE_CALLS = ("AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessage", "AmazonSQS.GetQueueAttributes")


def report(row: E2eRow) -> None:
    answers = max(1, row.succeeded)
    calls = {k: v for k, v in row.calls.items() if k not in _EVENT_SOURCE_CALLS}
    print(f"\n| scenario 8: {row.lines:,} lines, {row.shards} shards | peak RSS MB |")
    print("|---|---|")
    for what, mb in row.invocations:
        print(f"| {what} | {mb:.0f} |")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    print(
        f"\n{row.succeeded:,} answered ({row.answered_once:,} prompts answered once by the API, "
        f"{row.answered_again} more than once), {row.failed} failed in {row.seconds:.0f} s; every invocation's "
        f"peak RSS at most {row.peak_mb:.0f} MB; DynamoDB calls {1000 * row.ddb_calls / answers:.1f} per 1,000 "
        f"answers, all the function's AWS calls {1000 * sum(calls.values()) / answers:.1f} ({detail})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.e2e_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="each invocation's time limit (Lambda's)")
    args = parser.parse_args(argv)
    from infra.bench import _process

    fake = ["-m", "infra.fake_openai", "--port", "0", "--latency-ms", str(args.latency_ms)]
    with _process(fake, "listening on") as server, _process(["-m", "infra.bench", "moto"], "moto listening on") as moto:
        row = run_e2e(
            server=server,
            moto=moto,
            lines=args.lines,
            shards=args.shards,
            concurrency=args.concurrency,
            timeout_s=args.timeout_s,
        )
    report(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
