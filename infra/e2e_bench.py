"""``make bench``'s scenario 8: one large file end to end through shards, as Lambda would run it.

A ``.jsonl`` of N lines is uploaded to a local stack (moto); the real handler, in a process of its
own for every invocation (``python -m infra.invoke --peak``), plans it into shards, runs every
shard (two at a time: this machine's cores), runs every continuation a shard queues when its
invocation's time runs out (``--timeout-s``, as Lambda's limit), and the last shard to finish
writes the outputs. Against the fake OpenAI API, with no rate limit.

Reported: each invocation's peak RSS (the planning one, each shard's runs, the finalizing one),
the DynamoDB and all AWS calls per 1,000 answers (moto's own counter), the answers, and the wall
time. Run alone: ``python -m infra.e2e_bench --lines 1000000``.

``--journaled-shards K``: K of the shards' answers are written to the journal as a shard writes them
(the product's own ``RequestLog`` and a unit hold's ``complete``), without the API — shards that answered
and finished before the rest. Their messages still run (each finds its unit done), the other
shards run through the API, and the last writes the outputs of every line. What it saves is the
hour the fake API and moto take to answer a million prompts; what it keeps is every invocation a
million-line job has, the finalizer's included.

The moto server sets the pace at that size, not the function. Its table queries read only their
partition here (``infra/moto_patches.py``), but building each page's answer still takes moto 2 to
3 s at a million items. In the journaled million-line run, the eighth shard's invocation (124,790
answers, then the finalizer's 576 pages over every item) took about 29 of its 40 minutes. ``make
bench`` runs 100,000 lines.
"""

from __future__ import annotations

import argparse
import asyncio
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

from infra.bench_processes import helper_process, moto_process
from infra.event_source import SqsEventSource
from infra.invoke import finished, invocation_env, spawn
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
    journaled: int = 0  # lines whose answers were journaled without the API (--journaled-shards)
    spool_mb: float = 0.0  # what the finalizer spooled to /tmp: the .out.jsonl and .errors.jsonl

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
    response, figures = finished(process)
    return response, float(figures["peak_rss_mb"])


def _take_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        got += batch
    return got


MODEL = "gpt-4o-mini"  # of the answers journaled without the API
_ANSWER = {
    "object": "chat.completion",
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "even"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 18, "completion_tokens": 1, "total_tokens": 19},
}


def _shard_lines(data: Any, body: dict[str, Any]) -> range:
    """The line numbers of a shard's message (line-aligned bytes ``start``..``end`` of the file)."""
    data.seek(body["start"])
    count = data.read(body["end"] - body["start"]).count(b"\n") if body.get("end") else data.read().count(b"\n")
    return range(body["first_line"], body["first_line"] + count)


async def _journal_shard(stack: Any, body: dict[str, Any], lines: range) -> None:
    """Write a shard's answers and finish its unit, as the shard's own run does (no API calls)."""
    import aioboto3
    from promptdrop.adapters.journal import Journal
    from promptdrop.jobs.run_result import now_iso
    from promptdrop.records import RequestRecord, RequestStatus

    session = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=stack.region)  # noqa: S106
    async with session.client("dynamodb", endpoint_url=stack.endpoint) as ddb:
        journal = Journal(ddb, stack.table)
        for start in range(lines.start, lines.stop, 1000):
            records = [
                RequestRecord(
                    custom_id=f"req-{line - 1:07d}",
                    line=line,
                    status=RequestStatus.SUCCEEDED,
                    attempts=1,
                    model=MODEL,
                    latency_ms=50,
                    status_code=200,
                    request_id=f"req_{line}",
                    prompt_tokens=18,
                    completion_tokens=1,
                    finish_reason="stop",
                    response=json.dumps(_ANSWER | {"id": f"chatcmpl-{line}"}, separators=(",", ":")),
                )
                for line in range(start, min(start + 1000, lines.stop))
            ]
            await journal.requests.write(body["job_id"], records, now_iso())
        async with journal.unit_held(body["job_id"], body["unit"], 60) as hold:
            await hold.complete(now_iso())


def run_e2e(
    *, server: str, moto: str, lines: int, shards: int, concurrency: int, timeout_s: float, journaled: int = 0
) -> E2eRow:
    stack = deploy(moto, stack_name=f"e2e{os.getpid()}x{int(time.time() * 1000) % 10**8}")
    key = f"{stack.input_prefix}e2e-{lines}.jsonl"
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    with tempfile.NamedTemporaryFile() as data:  # the input: written and uploaded a line at a time
        for i in range(lines):
            data.write(json.dumps({"custom_id": f"req-{i:07d}", "prompt": f"e2e {i}: odd or even?"}).encode() + b"\n")
        size = data.tell()
        data.flush()
        s3.upload_file(data.name, stack.bucket, key)  # (upload_fileobj would close it)
        env = invocation_env(
            stack,
            server,
            PROMPTDROP_MAX_CONCURRENCY=str(concurrency),
            PROMPTDROP_SHARD_BYTES=str(size // shards + 1),
            POWERTOOLS_LOG_LEVEL="WARNING",
        )
        row = E2eRow(lines=lines, shards=shards)
        started = time.perf_counter()
        with SqsEventSource.for_stack(stack) as source:
            _take_all(sqs, stack.work_queue_url)  # S3's test event and the upload's notification
            s3_record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": stack.bucket}, "object": {"key": key}}}
            _moto_calls(moto, reset=True)
            _, peak = _finish(_invoke({"Records": [s3_record]}, env, timeout_s))
            row.invocations.append(("planning", peak))
            print(f"  8: e2e {lines:,} lines: planned, peak RSS {peak:.0f} MB", flush=True)
            messages = _take_all(sqs, stack.work_queue_url)
            done_units = set()
            for message in messages[:journaled]:
                body = json.loads(message["Body"])
                shard_lines = _shard_lines(data, body)
                asyncio.run(_journal_shard(stack, body, shard_lines))
                done_units.add(body["unit"])
                row.journaled += len(shard_lines)
                print(f"  8: e2e {lines:,} lines: {body['unit']} journaled without the API", flush=True)
            if journaled:
                _moto_calls(moto, reset=True)  # count what the function does from here on
            while messages:
                for start in range(0, len(messages), PARALLEL):
                    batch = messages[start : start + PARALLEL]
                    runs = [(json.loads(m["Body"]), _invoke(source.build_event([m]), env, timeout_s)) for m in batch]
                    for body, run in runs:
                        _, peak = _finish(run)
                        what = f"{body['unit']}" + (f" (continuation {body['hops']})" if body.get("hops") else "")
                        what += " (journaled: found its unit done)" if body["unit"] in done_units else ""
                        row.invocations.append((what, peak))
                        print(f"  8: e2e {lines:,} lines: {what} done, peak RSS {peak:.0f} MB", flush=True)
                messages = _take_all(sqs, stack.work_queue_url)
    row.seconds = time.perf_counter() - started
    row.calls = _moto_calls(moto)
    summary = json.loads(
        s3.get_object(Bucket=stack.bucket, Key=f"{stack.output_prefix}{key}.summary.json")["Body"].read()
    )
    row.succeeded, row.failed = summary["counts"]["succeeded"], summary["counts"]["failed"]
    # The finalizer's spool on /tmp holds each output line once: the .out.jsonl and .errors.jsonl.
    spooled = (
        s3.head_object(Bucket=stack.bucket, Key=summary["outputs"][name].split("/", 3)[3])
        for name in ("results", "errors")
    )
    row.spool_mb = sum(head["ContentLength"] for head in spooled) / 2**20
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
    through_api = max(1, row.succeeded - row.journaled)  # the answers the counted invocations made
    calls = {k: v for k, v in row.calls.items() if k not in _EVENT_SOURCE_CALLS}
    print(f"\n| scenario 8: {row.lines:,} lines, {row.shards} shards | peak RSS MB |")
    print("|---|---|")
    for what, mb in row.invocations:
        print(f"| {what} | {mb:.0f} |")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
    journaled = f" ({row.journaled:,} of them journaled without the API)" if row.journaled else ""
    print(
        f"\n{row.succeeded:,} answered{journaled} ({row.answered_once:,} prompts answered once by the API, "
        f"{row.answered_again} more than once), {row.failed} failed in {row.seconds:.0f} s; every invocation's "
        f"peak RSS at most {row.peak_mb:.0f} MB; the finalizer's spool on /tmp {row.spool_mb:.0f} MB (the "
        f"outputs, once); per 1,000 answers made by the invocations counted: DynamoDB "
        f"calls {1000 * row.ddb_calls / through_api:.1f}, all the function's AWS calls "
        f"{1000 * sum(calls.values()) / through_api:.1f} ({detail})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.e2e_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="each invocation's time limit (Lambda's)")
    parser.add_argument("--journaled-shards", type=int, default=0, help="shards journaled without the API")
    args = parser.parse_args(argv)
    fake = ["-m", "infra.fake_openai", "--port", "0", "--latency-ms", str(args.latency_ms)]
    with helper_process(fake, "listening on") as server, moto_process() as moto:
        row = run_e2e(
            server=server,
            moto=moto,
            lines=args.lines,
            shards=args.shards,
            concurrency=args.concurrency,
            timeout_s=args.timeout_s,
            journaled=args.journaled_shards,
        )
    report(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
