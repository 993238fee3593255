"""The benchmark's contenders, each run in a fresh process by :func:`infra.bench_processes.run_contender`:
``python -m infra.bench_contenders NAME --n N [...]`` prints one JSON line (answers, failures, wall and CPU
seconds from the start of the contender's own work, peak RSS, and the handler's AWS calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence

from infra.bench_processes import post

__all__ = ["MAX_TOKENS", "MODEL", "main", "prompt"]

MODEL = "gpt-4o-mini"
MAX_TOKENS = 16


def prompt(i: int) -> str:
    return f"Question {i}: in one word, is {i} odd or even?"


async def _recipe(n: int, concurrency: int, aiohttp: bool) -> tuple[int, int]:
    from openai import AsyncOpenAI, DefaultAioHttpClient

    client = AsyncOpenAI(http_client=DefaultAioHttpClient()) if aiohttp else AsyncOpenAI()
    semaphore = asyncio.Semaphore(concurrency)

    async def get_chat_response(text: str) -> str | None:
        async with semaphore:
            response = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS
            )
            return response.choices[0].message.content

    results = await asyncio.gather(*(get_chat_response(prompt(i)) for i in range(n)), return_exceptions=True)
    await client.close()
    failed = sum(isinstance(r, BaseException) for r in results)
    return n - failed, failed


async def _promptdrop(
    n: int, concurrency: int, rpm: int | None, tpm: int | None, *, schema: bool = False
) -> tuple[int, int]:
    from promptdrop.engine.client import make_client
    from promptdrop.engine.dispatch import Dispatcher, Outcome
    from promptdrop.engine.rate_limiter import RateLimiter
    from promptdrop.engine.request import Request
    from promptdrop.formats import request_from_object

    _start_clock()

    client = make_client(api_key=None, max_connections=concurrency, timeout_s=120)
    dispatcher = Dispatcher(
        client.post_ready, limiter=RateLimiter(rpm=rpm, tpm=tpm), max_concurrency=concurrency, max_attempts=6
    )
    counts = [0, 0]

    async def requests() -> AsyncIterator[Request]:
        for i in range(n):  # parsed as the handler parses a .jsonl line, one at a time
            fields = {"prompt": prompt(i), "max_tokens": MAX_TOKENS}
            if schema:  # every answer parsed and validated against the schema
                from infra.validation_bench import RESPONSE_FORMAT

                fields |= {"response_format": RESPONSE_FORMAT, "max_tokens": 200}
            line = json.dumps(fields)
            item = request_from_object(
                json.loads(line), line=i + 1, default_id=f"line-{i + 1}", default_model=MODEL, text_len=len(line)
            )
            assert isinstance(item, Request)
            yield item

    async def count(outcome: Outcome) -> None:
        counts[outcome.error is not None] += 1

    await dispatcher.run(requests(), count)
    await client.close()
    return counts[0], counts[1]


def _handler(n: int, concurrency: int, moto_endpoint: str) -> tuple[int, int, dict[str, int]]:
    import boto3

    from infra.event_source import LocalContext
    from infra.local_aws import deploy

    stack = deploy(moto_endpoint, stack_name=f"bench{os.getpid()}")
    os.environ.update(
        stack.function_env(
            PROMPTDROP_MAX_CONCURRENCY=str(concurrency),
            PROMPTDROP_OPENAI_SECRET_ARN="",
            POWERTOOLS_LOG_LEVEL="WARNING",
            POWERTOOLS_METRICS_DISABLED="true",
        )
    )
    for name in list(os.environ):
        if name.startswith("PROMPTDROP_") and not os.environ[name]:
            del os.environ[name]
    key = f"{stack.input_prefix}bench-{n}.jsonl"
    body = "\n".join(json.dumps({"prompt": prompt(i), "max_tokens": MAX_TOKENS}) for i in range(n)).encode()
    boto3.client("s3", endpoint_url=moto_endpoint).put_object(Bucket=stack.bucket, Key=key, Body=body)
    from promptdrop import runtime
    from promptdrop.handler import lambda_handler

    event = {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": stack.bucket}, "object": {"key": key}}}]}
    post(f"{moto_endpoint}/_local/calls")  # count only what the handler does
    _start_clock()
    (job,) = lambda_handler(event, LocalContext())["jobs"]
    calls = json.loads(post(f"{moto_endpoint}/_local/calls", method="GET"))
    runtime.shutdown()
    return job["succeeded"], job["failed"], calls


_clock: list[float] = []


def _start_clock() -> None:
    """Measure from here: imports and set-up (stack, upload) are not the contender's work."""
    _clock[:] = [time.perf_counter(), time.process_time()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench_contenders")
    parser.add_argument("name", choices=["recipe", "recipe+aiohttp", "promptdrop", "handler"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--moto")
    parser.add_argument("--schema", action="store_true", help="promptdrop: ask for structured output, validated")
    args = parser.parse_args(argv)
    import openai  # noqa: F401  # imported before the clock starts, for every contender alike

    _start_clock()
    calls: dict[str, int] = {}
    if args.name == "handler":
        ok, failed, calls = _handler(args.n, args.concurrency, args.moto)
    elif args.name == "promptdrop":
        ok, failed = asyncio.run(_promptdrop(args.n, args.concurrency, args.rpm, args.tpm, schema=args.schema))
    else:
        ok, failed = asyncio.run(_recipe(args.n, args.concurrency, aiohttp=args.name == "recipe+aiohttp"))
    wall, cpu = time.perf_counter() - _clock[0], time.process_time() - _clock[1]
    from infra.rss import peak_rss_mb

    peak_mb = peak_rss_mb()
    print(json.dumps({"ok": ok, "failed": failed, "wall_s": wall, "cpu_s": cpu, "peak_mb": peak_mb, "calls": calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
