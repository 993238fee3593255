"""``make bench``: promptdrop against the recipe it replaces, same machine, same run, same server.

Every contender runs in a fresh process (so CPU time and peak RSS are its own) against the local
fake OpenAI API, which runs in a process of its own:

* ``recipe`` — the seeds' script: ``AsyncOpenAI()`` as is, ``asyncio.gather`` over every prompt,
  an ``asyncio.Semaphore``, ``client.chat.completions.create``;
* ``recipe+aiohttp`` — the same with the SDK's aiohttp transport (``DefaultAioHttpClient``);
* ``promptdrop`` — promptdrop's engine (streamed requests, worker pool, limiter, retries);
* ``handler`` — promptdrop end to end: a ``.jsonl`` in S3, the real Lambda handler, the journal,
  the outputs, against a moto server (a third process), counting the AWS calls it makes.

Scenarios: (1) 10,000 prompts, 200 ms latency, concurrency 500, no rate limit; (2) a server that
enforces 12,000 requests/min and 600,000 tokens/min over one-second windows; (3) 10,000 and
100,000 short prompts, for memory. Plus the cold-start import cost. Figures are printed as ratios
against the recipe measured in the same run: nothing here asserts a timing.

Fleet scenarios (``infra/fleet_bench.py``), against a server enforcing 6,000 requests/min over
one-second windows: (4) one file run as 4 and as 10 shard invocations started together, limits
learned or configured as the account's (and 4 that do not share them, for comparison); (5) one
invocation, limits learned, concurrency 200. ``--only engine`` or ``--only fleet`` runs one half.

End to end (``infra/e2e_bench.py``, ``--only e2e``): (8) one large file through the real handler
as Lambda runs it — planned, 8 shards, continuations, the finalizer — each invocation's peak RSS
and the DynamoDB calls per 1,000 answers (``--e2e-lines``, 100,000 by default).

Validation (``infra/validation_bench.py``, ``--only validation``): (6) the structured-output
validator's CPU per answer (against ``jsonschema``'s), and the engine's throughput with every
answer validated against a schema vs the same prompts without one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when run: the contenders' processes must not pay for boto3
    from infra.fleet_bench import FleetRow

__all__ = ["main"]

ROOT = Path(__file__).parents[1]
MODEL = "gpt-4o-mini"
MAX_TOKENS = 16


def prompt(i: int) -> str:
    return f"Question {i}: in one word, is {i} odd or even?"


# -- the contenders (each runs in its own process: `python -m infra.bench worker NAME ...`) -----


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
    _post(f"{moto_endpoint}/_local/calls")  # count only what the handler does
    _start_clock()
    (job,) = lambda_handler(event, LocalContext())["jobs"]
    calls = json.loads(_post(f"{moto_endpoint}/_local/calls", method="GET"))
    runtime.shutdown()
    return job["succeeded"], job["failed"], calls


_clock: list[float] = []


def _start_clock() -> None:
    """Measure from here: imports and set-up (stack, upload) are not the contender's work."""
    _clock[:] = [time.perf_counter(), time.process_time()]


def worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench worker")
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


# -- the conductor -----------------------------------------------------------------------------


def _post(url: str, method: str = "POST") -> str:
    with urllib.request.urlopen(
        urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    ) as r:  # loopback only
        return str(r.read().decode())


@contextmanager
def _process(args: list[str], ready: str) -> Iterator[str]:
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


def _run(scenario: str, contender: str, n: int, server: str, extra: list[str] | None = None) -> Row:
    _post(server.removesuffix("/v1") + "/stats/reset")
    env = {**os.environ, "OPENAI_BASE_URL": server, "OPENAI_API_KEY": "sk-bench"}
    out = subprocess.run(
        [sys.executable, "-m", "infra.bench", "worker", contender, "--n", str(n), *(extra or [])],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = json.loads(_post(server.removesuffix("/v1") + "/stats", method="GET"))
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


def _import_costs(statements: Sequence[str], repeat: int = 11) -> list[float]:
    """Median wall time of a fresh interpreter running each statement, taken in turns (drift hits all alike)."""
    times: list[list[float]] = [[] for _ in statements]
    for _ in range(repeat):
        for i, statement in enumerate(statements):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True, cwd=ROOT)
            times[i].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description="promptdrop vs the recipe")
    parser.add_argument("--quick", action="store_true", help="a tenth of the prompts, for a smoke run")
    parser.add_argument(
        "--only",
        choices=["engine", "fleet", "validation", "scale", "e2e"],
        help="engine: scenarios 1-3 and the cold start; fleet: 4-5 (one account's limit shared); validation: 6; "
        "scale: 7 (memory and disk at a million lines); e2e: 8 (a large file end to end through shards)",
    )
    parser.add_argument(
        "--e2e-lines",
        type=int,
        default=100_000,
        help="scenario 8's file (default 100,000 lines, about 8 minutes here; 1,000,000 takes over an hour)",
    )
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; every contender in its own process\n")
    if args.only in (None, "engine"):
        _engine_scenarios(scale)
    if args.only in (None, "fleet"):
        _fleet_scenarios(scale)
    if args.only in (None, "validation"):
        _validation_scenario(scale)
    if args.only in (None, "scale"):
        from infra.scale_bench import run_scale

        print("\nscenario 7: planning and writing the outputs of large files (peak RSS per process)")
        with _process(["-m", "infra.bench", "moto"], "moto listening on") as moto:
            run_scale(moto, (100_000 // scale, 1_000_000 // scale))
    if args.only in (None, "e2e"):
        from infra.e2e_bench import report as report_e2e
        from infra.e2e_bench import run_e2e

        lines = args.e2e_lines // scale
        print(f"\nscenario 8: {lines:,} lines end to end through 8 shards (each invocation in its own process)")
        fake = ["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "50"]
        with (
            _process(fake, "listening on") as server,
            _process(["-m", "infra.bench", "moto"], "moto listening on") as moto,
        ):
            row = run_e2e(server=server, moto=moto, lines=lines, shards=8, concurrency=200, timeout_s=900.0)
        report_e2e(row)
    return 0


def _validation_scenario(scale: int) -> None:
    """6: the validator's CPU per answer, and the engine's throughput with and without validation."""
    from infra.validation_bench import validator_costs

    costs = validator_costs()
    n = 10_000 // scale
    with _process(["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "200"], "listening on") as server:
        # In turns, twice each: drift on a shared machine hits both alike; the better of each is kept.
        runs = [
            _run("6: validation", contender, n, server, ["--concurrency", "500", *flags])
            for _ in range(2)
            for contender, flags in (("promptdrop", []), ("promptdrop", ["--schema"]))
        ]
    plain = max(runs[0::2], key=lambda r: r.per_s)
    validated = max(runs[1::2], key=lambda r: r.per_s)
    print("\n| scenario | contender | prompts | answers/s | CPU ms/answer | peak RSS MB | failed |")
    print("|---|---|---|---|---|---|---|")
    for name, row in (("promptdrop, text", plain), ("promptdrop, json_schema validated", validated)):
        print(
            f"| 6: validation | {name} | {row.n} | {row.per_s:.0f} | {row.cpu_ms:.2f} | {row.peak_mb:.0f} "
            f"| {row.failed} |"
        )
    print(
        f"\nvalidated throughput {validated.per_s / plain.per_s:.1%} of plain; validator per answer "
        f"(json.loads + validate): fastjsonschema {costs['fastjsonschema_ms']:.4f} ms, jsonschema "
        f"{costs['jsonschema_ms']:.4f} ms (json.loads alone {costs['json_loads_ms']:.4f} ms); import "
        f"fastjsonschema {costs['fastjsonschema_import_ms']:.0f} ms, jsonschema {costs['jsonschema_import_ms']:.0f} ms"
    )


def _fleet_scenarios(scale: int) -> None:
    """4: 4 and 10 invocations on one sharded file, limits learned or configured (and 4 not sharing them);
    5: one invocation, limits learned, concurrency 200 — all against a 6,000 requests/min server."""
    from infra.fleet_bench import report, run_fleet

    rpm = 6000
    rows: list[FleetRow] = []
    limited = ["--port", "0", "--latency-ms", "200", "--rpm", str(rpm), "--burst-s", "1"]
    with (
        _process(["-m", "infra.fake_openai", *limited], "listening on") as server,
        _process(["-m", "infra.bench", "moto"], "moto listening on") as moto,
    ):
        runs = [
            ("4: fleet", 4, "learned"),
            ("4: fleet", 4, "configured"),
            ("4: fleet", 4, "not shared"),
            ("4: fleet", 10, "learned"),
            ("4: fleet", 10, "configured"),
        ]
        for scenario, invocations, limits in runs:
            row = run_fleet(
                scenario,
                server=server,
                moto=moto,
                invocations=invocations,
                prompts=6000 // scale,
                rpm=rpm,
                limits=limits,
                concurrency=100,
            )
            rows.append(row)
            _print_fleet(row)
        row = run_fleet(
            "5: one, c=200",
            server=server,
            moto=moto,
            invocations=1,
            prompts=3000 // scale,
            rpm=rpm,
            limits="learned",
            concurrency=200,
        )
        rows.append(row)
        _print_fleet(row)
    report(rows)


def _print_fleet(row: FleetRow) -> None:
    print(
        f"  {row.scenario:<14} {row.invocations:>2} invocations, limits {row.limits:<10}: {row.used:.1%} of the limit "
        f"used, {row.rate_limited} 429s of {row.requests} requests, {row.answered_once}/{row.prompts} answered once, "
        f"{row.failed} failed",
        flush=True,
    )


def _engine_scenarios(scale: int) -> None:
    rows: list[Row] = []

    with _process(["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "200"], "listening on") as server:
        n = 10_000 // scale
        for contender in ("recipe", "recipe+aiohttp", "promptdrop"):
            rows.append(_run("1: 200ms", contender, n, server, ["--concurrency", "500"]))
        with _process(["-m", "infra.bench", "moto"], "moto listening on") as moto:
            rows.append(_run("1: 200ms", "handler", n, server, ["--concurrency", "500", "--moto", moto]))
        for n in (10_000 // scale, 100_000 // scale):
            for contender in ("recipe+aiohttp", "promptdrop"):
                rows.append(_run(f"3: {n // 1000}k", contender, n, server, ["--concurrency", "500"]))

    limited = ["--port", "0", "--latency-ms", "200", "--rpm", "12000", "--tpm", "600000", "--burst-s", "1"]
    with _process(["-m", "infra.fake_openai", *limited], "listening on") as server:
        n = 10_000 // scale
        rows.append(_run("2: limits", "recipe+aiohttp", n, server, ["--concurrency", "500"]))
        rows.append(
            _run("2: limits", "promptdrop", n, server, ["--concurrency", "500", "--rpm", "12000", "--tpm", "600000"])
        )

    base, ours = _import_costs(["import openai, aioboto3", "import promptdrop.handler"])
    _report(rows, base, ours)


def _report(rows: list[Row], base_import: float, handler_import: float) -> None:
    def find(scenario: str, contender: str) -> Row:
        return next(r for r in rows if r.scenario == scenario and r.contender == contender)

    print(
        "\n| scenario | contender | prompts | answers/s | CPU ms/answer | peak RSS MB | 429s | failed "
        "| vs recipe | vs recipe+aiohttp |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        recipe = next((x for x in rows if x.scenario == r.scenario and x.contender == "recipe"), None)
        aio = next(
            (x for x in rows if x.scenario == r.scenario and x.contender == "recipe+aiohttp" and x.n == r.n), None
        )
        vs = f"{r.per_s / recipe.per_s:.2f}x" if recipe else "-"
        vs_aio = f"{r.per_s / aio.per_s:.2f}x" if aio else "-"
        print(
            f"| {r.scenario} | {r.contender} | {r.n} | {r.per_s:.0f} | {r.cpu_ms:.2f} | {r.peak_mb:.0f} | "
            f"{r.rate_limited} | {r.failed} | {vs} | {vs_aio} |"
        )
    handler = find("1: 200ms", "handler")
    calls = sum(handler.calls.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(handler.calls.items()))
    print(
        f"\nhandler + moto: {calls} AWS calls for {handler.ok} answers = "
        f"{1000 * calls / max(1, handler.ok):.1f} per 1,000 ({detail})"
    )
    limited = find("2: limits", "promptdrop")
    print(
        f"scenario 2: promptdrop sustained {limited.per_s * 60:.0f} requests/min = "
        f"{limited.per_s / 200:.1%} of the 12,000/min limit; "
        f"429s {limited.rate_limited / max(1, limited.ok):.2%} of requests; {limited.failed} failed"
    )
    small = [r for r in rows if r.scenario.startswith("3") and r.contender == "promptdrop"]
    if len(small) == 2:
        print(
            f"scenario 3: promptdrop peak RSS {small[0].peak_mb:.0f} MB at {small[0].n} prompts, "
            f"{small[1].peak_mb:.0f} MB at {small[1].n}"
        )
    print(
        f"cold start: import promptdrop.handler {handler_import:.2f} s vs import openai, aioboto3 {base_import:.2f} s "
        f"(medians of 11, taken in turns) = {handler_import / base_import:.2f}x"
    )


def _serve_moto() -> int:
    from infra.local_aws import start_moto

    _, endpoint = start_moto()
    print(f"moto listening on {endpoint}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1:2] == ["moto"]:
        sys.exit(_serve_moto())
    sys.exit(main())
