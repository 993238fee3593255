"""``make bench``: promptdrop against the recipe it replaces, same machine, same run, same server.

Every contender runs in a fresh process (so CPU time and peak RSS are its own; the contenders are in
:mod:`infra.bench_contenders`, their processes and the servers' in :mod:`infra.bench_processes`) against
the local fake OpenAI API, which runs in a process of its own:

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

Cost (``infra/cost_bench.py``, ``--only cost``): (9) the same 10,000-line file sent in each mode (cost
per 1,000 answers, wall time, API calls), then re-uploaded with one line changed (the answer cache).

The batch mode's memory (``infra/merge_bench.py``, ``--only merge``): (10) the invocation that merges a
provider batch's output file of 5,000 and 50,000 answers of about 4 KB (20 and 200 MB), and the one that
uploads an input file of that size, each against its own baseline and issue 17's 250 MB.

Validation (``infra/validation_bench.py``, ``--only validation``): (6) the structured-output
validator's CPU per answer (against ``jsonschema``'s), and the engine's throughput with every
answer validated against a schema vs the same prompts without one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from infra.bench_processes import ROOT, Row, helper_process, moto_process, run_contender

if TYPE_CHECKING:  # imported when its scenarios run
    from infra.fleet_bench import FleetRow

__all__ = ["main"]


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
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description="promptdrop vs the recipe")
    parser.add_argument("--quick", action="store_true", help="a tenth of the prompts, for a smoke run")
    parser.add_argument(
        "--only",
        choices=["engine", "fleet", "validation", "scale", "e2e", "cost", "merge"],
        help="engine: scenarios 1-3 and the cold start; fleet: 4-5 (one account's limit shared); validation: 6; "
        "scale: 7 (memory and disk at a million lines); e2e: 8 (a large file end to end through shards); "
        "cost: 9 (the same file in each mode, and re-uploaded with one line changed); "
        "merge: 10 (the batch mode's memory: merging a 200 MB output file, uploading a 200 MB input file)",
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
        with moto_process() as moto:
            run_scale(moto, (100_000 // scale, 1_000_000 // scale))
    if args.only in (None, "e2e"):
        from infra.e2e_bench import report as report_e2e
        from infra.e2e_bench import run_e2e

        lines = args.e2e_lines // scale
        print(f"\nscenario 8: {lines:,} lines end to end through 8 shards (each invocation in its own process)")
        fake = ["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "50"]
        with (
            helper_process(fake, "listening on") as server,
            moto_process() as moto,
        ):
            row = run_e2e(server=server, moto=moto, lines=lines, shards=8, concurrency=200, timeout_s=900.0)
        report_e2e(row)
    if args.only in (None, "cost"):
        from infra.cost_bench import report as report_costs
        from infra.cost_bench import run_costs

        report_costs(run_costs(10_000 // scale))
    if args.only in (None, "merge"):
        from infra.merge_bench import report as report_merge
        from infra.merge_bench import run_merge

        print("\nscenario 10: the batch mode's memory (each invocation in its own process; answers of about 4 KB)")
        report_merge(run_merge((5_000 // scale, 50_000 // scale)))
    return 0


def _validation_scenario(scale: int) -> None:
    """6: the validator's CPU per answer, and the engine's throughput with and without validation."""
    from infra.validation_bench import validator_costs

    costs = validator_costs()
    n = 10_000 // scale
    with helper_process(["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "200"], "listening on") as server:
        # In turns, twice each: drift on a shared machine hits both alike; the better of each is kept.
        runs = [
            run_contender("6: validation", contender, n, server, ["--concurrency", "500", *flags])
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
        helper_process(["-m", "infra.fake_openai", *limited], "listening on") as server,
        moto_process() as moto,
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

    with helper_process(["-m", "infra.fake_openai", "--port", "0", "--latency-ms", "200"], "listening on") as server:
        n = 10_000 // scale
        for contender in ("recipe", "recipe+aiohttp", "promptdrop"):
            rows.append(run_contender("1: 200ms", contender, n, server, ["--concurrency", "500"]))
        with moto_process() as moto:
            rows.append(run_contender("1: 200ms", "handler", n, server, ["--concurrency", "500", "--moto", moto]))
        for n in (10_000 // scale, 100_000 // scale):
            for contender in ("recipe+aiohttp", "promptdrop"):
                rows.append(run_contender(f"3: {n // 1000}k", contender, n, server, ["--concurrency", "500"]))

    limited = ["--port", "0", "--latency-ms", "200", "--rpm", "12000", "--tpm", "600000", "--burst-s", "1"]
    with helper_process(["-m", "infra.fake_openai", *limited], "listening on") as server:
        n = 10_000 // scale
        rows.append(run_contender("2: limits", "recipe+aiohttp", n, server, ["--concurrency", "500"]))
        rows.append(
            run_contender(
                "2: limits", "promptdrop", n, server, ["--concurrency", "500", "--rpm", "12000", "--tpm", "600000"]
            )
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


if __name__ == "__main__":
    sys.exit(main())
