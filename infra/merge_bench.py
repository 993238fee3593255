"""``make bench``'s scenario 10: the batch mode's memory, merging a 200 MB output file and uploading a 200 MB input.

Issue 17's target: merging a 200 MB output file keeps the invocation under 250 MB of RSS. Through the real
handler, each invocation in a fresh process of its own (``python -m infra.invoke --peak --baseline``) against a
moto server and the fake OpenAI API, each in a process of its own too (the fake keeps its files in memory: not
counted), with answers of about 4 KB (the fake's ``--batch-answer-chars``):

* ``merge``: a ``.jsonl`` of N short chat prompts uploaded with ``promptdrop-mode: batch`` runs as the product
  runs it — the upload's invocation submits the batch and leaves the job waiting; once the fake's batch has
  completed, the check message's invocation merges its output file (N lines of about 4 KB) into the journal and,
  the unit done, writes the job's outputs. That invocation is measured.
* ``upload``: a ``.jsonl`` of N prompts of about 4 KB: the upload's invocation writes the Batch API input file and
  uploads it (``OpenAIBatches.upload``, the openai SDK's ``files.create`` over its aiohttp transport). Measured.

Each row: the file's size, the invocation's peak RSS and its baseline (the same process after its imports and its
runtime — the clients — were built, before the event), the handler's wall time, and the peak against the target.
``PROMPTDROP_SHARD_BYTES`` is set above the file's size so one invocation holds the whole file (the default
32 MiB would split the 200 MB upload into shards, each with a batch of its own). Nothing here asserts a figure.

Run alone: ``python -m infra.merge_bench --lines 5000 --lines 50000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.bench_processes import helper_process, moto_process
from infra.event_source import SqsEventSource
from infra.invoke import finished, invocation_env, spawn
from infra.local_aws import LocalAws, deploy

__all__ = ["ANSWER_CHARS", "TARGET_MB", "MemoryRow", "report", "run_merge"]

TARGET_MB = 250.0  # issue 17: the merging invocation's RSS
ANSWER_CHARS = 3200  # each answer's text: with the rest of its output line, about 4 KB
PROMPT_CHARS = 3900  # the upload's prompts: with the rest of their input line, about 4 KB
MODEL = "gpt-4o-mini"
_SETTLED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class MemoryRow:
    what: str  # "merge" or "upload"
    lines: int
    file_mb: float  # the output file merged, or the input file uploaded
    baseline_mb: float
    peak_mb: float
    seconds: float  # the handler's wall time in the measured invocation
    done: int  # merge: the lines the job's summary counts succeeded; upload: the requests the provider read

    @property
    def added_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


def _api(server: str, path: str) -> Any:
    with urllib.request.urlopen(f"{server}{path}") as response:  # loopback only
        return json.load(response)


def _batches(server: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = _api(server, "/batches")["data"]
    return data


def _settled(server: str, batch_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch: dict[str, Any] = _api(server, f"/batches/{batch_id}")
        if batch["status"] in _SETTLED:
            return batch
        time.sleep(0.5)
    raise RuntimeError(f"the fake's batch {batch_id} did not end in {timeout_s} s")


def _invoke(event: dict[str, Any], env: dict[str, str]) -> dict[str, float]:
    """One invocation in a fresh process: its figures (peak and baseline RSS, the handler's seconds)."""
    _, figures = finished(spawn(event, env, "--peak", "--baseline"))
    return {k: float(v) for k, v in figures.items()}


def _next(stack: LocalAws, sqs: Any, key: str, wait_s: int) -> dict[str, Any] | None:
    """The work queue's next message for the upload ``key`` (others deleted unrun: S3's notifications, another
    row's checks), or None after ``wait_s`` without one. The bench plays the event-source mapping."""
    deadline = time.monotonic() + wait_s
    while True:
        left = max(0, int(deadline - time.monotonic() + 0.999))
        got = sqs.receive_message(QueueUrl=stack.work_queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=min(left, 20))
        messages: list[dict[str, Any]] = got.get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=stack.work_queue_url, ReceiptHandle=message["ReceiptHandle"])
            if json.loads(message["Body"]).get("key") == key:
                return message
        if not messages and time.monotonic() >= deadline:
            return None


def _upload(stack: LocalAws, s3: Any, key: str, lines: int, prompt: str, **body: Any) -> None:
    """The input written and uploaded from disk, a line at a time (the bench's own memory is not measured)."""
    with tempfile.NamedTemporaryFile() as data:
        for i in range(lines):
            line = {"custom_id": f"q{i:06d}", "model": MODEL, "prompt": f"{i}: {prompt}", **body}
            data.write(json.dumps(line).encode() + b"\n")
        data.flush()
        s3.upload_file(data.name, stack.bucket, key, ExtraArgs={"Metadata": {"promptdrop-mode": "batch"}})


def _submitted(key: str, bucket: str, env: dict[str, str]) -> dict[str, float]:
    """The upload's invocation (it submits the batch and queues the first check): its figures."""
    record = {"eventSource": "aws:s3", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
    return _invoke({"Records": [record]}, env)


def _merge_row(stack: LocalAws, server: str, env: dict[str, str], lines: int) -> MemoryRow:
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    key = f"{stack.input_prefix}merge-{lines}.jsonl"
    _upload(stack, s3, key, lines, "answer at length")  # no max_tokens: each answer is ANSWER_CHARS long
    before = {b["id"] for b in _batches(server)}
    _submitted(key, stack.bucket, env)
    (batch,) = [b for b in _batches(server) if b["id"] not in before]
    batch = _settled(server, batch["id"], timeout_s=600)
    output = _api(server, f"/files/{batch['output_file_id']}")
    # The first check, queued by the upload's invocation, finds the batch ended: it merges, and the unit done,
    # writes the job's outputs.
    check = _next(stack, sqs, key, 30)
    if check is None:
        raise RuntimeError(f"no check message came for {key}")
    with SqsEventSource.for_stack(stack) as source:
        figures = _invoke(source.build_event([check]), env)
    if _next(stack, sqs, key, 2) is not None:
        raise RuntimeError(f"{key}: the job did not end in the merging invocation")
    summary = json.loads(
        s3.get_object(Bucket=stack.bucket, Key=f"{stack.output_prefix}{key}.summary.json")["Body"].read()
    )
    sqs.close()
    s3.close()
    return MemoryRow(
        "merge",
        lines,
        output["bytes"] / 1e6,
        figures["baseline_rss_mb"],
        figures["peak_rss_mb"],
        figures["handler_s"],
        summary["counts"]["succeeded"],
    )


def _upload_row(stack: LocalAws, server: str, env: dict[str, str], lines: int) -> MemoryRow:
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    key = f"{stack.input_prefix}upload-{lines}.jsonl"
    # max_tokens 16: the fake answers this batch briefly (its output is not what this row measures).
    _upload(stack, s3, key, lines, "x" * PROMPT_CHARS, max_tokens=16)
    before = {b["id"] for b in _batches(server)}
    figures = _submitted(key, stack.bucket, env)
    (batch,) = [b for b in _batches(server) if b["id"] not in before]
    uploaded = _api(server, f"/files/{batch['input_file_id']}")
    batch = _settled(server, batch["id"], timeout_s=600)  # the fake's work done before the next row is measured
    sqs.close()
    s3.close()
    return MemoryRow(
        "upload",
        lines,
        uploaded["bytes"] / 1e6,
        figures["baseline_rss_mb"],
        figures["peak_rss_mb"],
        figures["handler_s"],
        batch["request_counts"]["total"],
    )


def run_merge(sizes: Sequence[int]) -> list[MemoryRow]:
    """For each size: the merge of a batch of that many ~4 KB answers, and the upload of that many ~4 KB prompts."""
    fake = ["-m", "infra.fake_openai", "--port", "0", "--batch-answer-chars", str(ANSWER_CHARS)]
    rows: list[MemoryRow] = []
    with helper_process(fake, "listening on") as server, moto_process() as moto:
        stack = deploy(moto, stack_name=f"merge{os.getpid()}")
        env = invocation_env(
            stack,
            server,
            PROMPTDROP_BATCH_POLL_S="1",
            PROMPTDROP_SHARD_BYTES=str(1 << 30),
            PROMPTDROP_CACHE="off",
            POWERTOOLS_LOG_LEVEL="WARNING",
        )
        for lines in sizes:
            for measure in (_merge_row, _upload_row):
                row = measure(stack, server, env, lines)
                rows.append(row)
                print(
                    f"  10: {row.what} {row.lines:,} lines ({row.file_mb:.0f} MB): peak RSS {row.peak_mb:.0f} MB "
                    f"(baseline {row.baseline_mb:.0f} MB), {row.seconds:.1f} s",
                    flush=True,
                )
    return rows


def report(rows: Sequence[MemoryRow]) -> None:
    target = f"vs {TARGET_MB:.0f} MB"
    print(f"\n| scenario 10 | lines | file MB | baseline RSS MB | peak RSS MB | added MB | seconds | {target} |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        name = "merge an output file" if row.what == "merge" else "upload an input file"
        print(
            f"| {name} | {row.lines:,} | {row.file_mb:.0f} | {row.baseline_mb:.0f} | {row.peak_mb:.0f} | "
            f"{row.added_mb:.0f} | {row.seconds:.1f} | {row.peak_mb / TARGET_MB:.2f}x "
            f"({TARGET_MB - row.peak_mb:+.0f} MB) |"
        )
    for what, done in (("merge", "answered (the job's summary)"), ("upload", "read by the provider from the upload")):
        counts = ", ".join(f"{row.done:,} of {row.lines:,}" for row in rows if row.what == what)
        print(f"{what}: lines {done}: {counts}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.merge_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, action="append", help="a size (repeatable; default 5,000 and 50,000)")
    args = parser.parse_args(argv)
    report(run_merge(args.lines or (5_000, 50_000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
