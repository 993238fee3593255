"""Scenario 7 of ``make bench``: memory and disk at a million lines, where they used to grow.

Runs the two places that hold per-line state for a whole file — planning the shards (one pass
over the object in S3) and writing the ordered outputs (the finalizer's spool, streamed to S3) —
on synthetic files of 100,000 and 1,000,000 lines, each in a fresh process against a moto server,
and reports peak RSS and the spool's bytes on disk. (Every shard's run holds one shard's state:
bounded by ``PROMPTDROP_SHARD_BYTES``, whatever the file's size.)

Not a run through the API: a million answers through the fake API and moto would take an hour
here. The parts measured are the real product code paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aioboto3
import boto3
from boto3.s3.transfer import TransferConfig

from infra.rss import peak_rss_mb

__all__ = ["run_scale"]

ROOT = Path(__file__).parents[1]
BUCKET = "scale-bench"


async def _plan(moto: str, lines: int) -> dict[str, float]:
    from promptdrop.adapters.s3 import ObjectStore
    from promptdrop.jobs.planning import plan_shards
    from promptdrop.messages import UnitMessage

    key = f"plan-{lines}.jsonl"
    s3 = boto3.client("s3", endpoint_url=moto)
    s3.create_bucket(Bucket=BUCKET)
    with tempfile.TemporaryFile() as file:  # written and uploaded a line at a time: not counted
        for i in range(lines):
            file.write(json.dumps({"custom_id": f"req-{i:07d}", "prompt": f"question {i}"}).encode() + b"\n")
        file.seek(0)
        # One part at a time: boto3's default (10 threads of 8 MB parts) would set the peak itself.
        s3.upload_fileobj(file, BUCKET, key, Config=TransferConfig(use_threads=False))
    head = s3.head_object(Bucket=BUCKET, Key=key)
    base = peak_rss_mb()
    started = time.perf_counter()
    async with aioboto3.Session().client("s3", endpoint_url=moto) as client:
        whole = UnitMessage(job_id="j", bucket=BUCKET, key=key, etag=head["ETag"].strip('"'), unit="all")
        shards = (await plan_shards(ObjectStore(client), whole, 32 * 1024 * 1024)).shards
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": peak_rss_mb(), "before_mb": base, "shards": len(shards)}


async def _write(moto: str, lines: int) -> dict[str, float]:
    from promptdrop.adapters.s3 import ObjectStore
    from promptdrop.outputs import OrderedSpool

    boto3.client("s3", endpoint_url=moto).create_bucket(Bucket=BUCKET)
    base = peak_rss_mb()
    started = time.perf_counter()
    spool = OrderedSpool()
    answer = b'{"id":"batch_req","custom_id":"req-%07d","response":{"status_code":200,"body":{"choices":[]}}}\n'
    stride = 7919  # journal order is key order, not input order: visit the lines scrambled
    for i in range(lines):
        line = (i * stride) % lines + 1
        spool.add(line, answer % line)
    spool_bytes = spool._end  # the one copy on disk
    async with aioboto3.Session().client("s3", endpoint_url=moto) as client:
        await ObjectStore(client).put_stream(BUCKET, f"out-{lines}.jsonl", spool.sorted_lines(), "application/x-ndjson")
    spool.close()
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": peak_rss_mb(),
        "before_mb": base,
        "spool_mb": spool_bytes / 2**20,
    }


def worker(argv: list[str]) -> int:
    what, moto, lines = argv[0], argv[1], int(argv[2])
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    result = asyncio.run(_plan(moto, lines) if what == "plan" else _write(moto, lines))
    print(json.dumps(result))
    return 0


def run_scale(moto: str, sizes: tuple[int, ...] = (100_000, 1_000_000)) -> list[tuple[str, int, dict[str, float]]]:
    rows = []
    for what in ("plan", "write"):
        for lines in sizes:
            out = subprocess.run(
                [sys.executable, "-m", "infra.scale_bench", what, moto, str(lines)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((what, lines, result))
            extra = (
                f", {result['shards']:.0f} shards" if what == "plan" else f", spool {result['spool_mb']:.0f} MB on disk"
            )
            print(
                f"  7: scale {what:<5} {lines:>9,} lines: peak RSS {result['peak_mb']:.0f} MB "
                f"(at start {result['before_mb']:.0f} MB), {result['seconds']:.1f} s{extra}",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
