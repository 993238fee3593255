"""``make bench``'s fleet scenarios: several invocations sharing one account's rate limit.

One ``.jsonl`` is uploaded to a local stack (moto), split into N shards by the real handler, and
the N shard messages are run at once, each by the real handler in a process of its own
(``python -m infra.invoke``), against one fake OpenAI API enforcing a requests/min limit over
one-second windows (as OpenAI does for an organization's model). N = 1 runs the whole file in one
invocation.

Measured, for each run:

* **% of the limit used** — answers / (the limit * the time from the server's first request to
  its last answer), the server's counters polled every 0.1 s (so ±0.2 s of a run of a minute);
  process start-up before the first request is not counted, the tail after the first shard
  finishes is;
* **429s** — among all the requests the server received;
* **answered once** — the prompts the server answered exactly once (and none twice), and the
  job's ``succeeded``/``failed`` counts from its summary;
* **DynamoDB calls per 1,000 answers** — counted by the moto server (all the handler's DynamoDB
  calls), and among them the shared limits' own, from the ``left the shared limits`` log lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.event_source import SqsEventSource
from infra.invoke import invocation_env, spawn
from infra.local_aws import LocalAws, deploy

__all__ = ["FleetRow", "report", "run_fleet"]

ROOT = Path(__file__).parents[1]
MAX_TOKENS = 16


@dataclass
class FleetRow:
    scenario: str
    invocations: int
    limits: str  # "learned", "configured" or "not shared"
    prompts: int
    rpm: int
    answered_once: int
    answered_twice: int
    succeeded: int
    failed: int
    requests: int
    rate_limited: int
    active_s: float
    ddb_calls: int
    shared_calls: int
    calls: dict[str, int]

    @property
    def used(self) -> float:
        return self.answered_once / (self.rpm / 60 * self.active_s) if self.active_s else 0.0

    @property
    def rate_limited_share(self) -> float:
        return self.rate_limited / max(1, self.requests)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url) as r:  # loopback only
        return json.loads(r.read().decode())


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b"")) as r:  # loopback only
        r.read()


def _take(sqs: Any, url: str, count: int, wait_s: float = 10.0) -> list[dict[str, Any]]:
    """Receive (and delete) ``count`` messages that are not S3 test events."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    while len(got) < count and time.monotonic() < deadline:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
        ).get("Messages", [])
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if "s3:TestEvent" not in message["Body"]:
                got.append(message)
    if len(got) != count:
        raise RuntimeError(f"expected {count} work messages, got {len(got)}")
    return got


def _finish(process: subprocess.Popen[str]) -> tuple[Any, list[dict[str, Any]]]:
    """The invocation's response and its JSON log lines."""
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    if process.wait(timeout=60) != 0:
        raise RuntimeError(f"an invocation failed:\n{out[-3000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines[-1], lines[:-1]


def run_fleet(
    scenario: str,
    *,
    server: str,
    moto: str,
    invocations: int,
    prompts: int,
    rpm: int,
    limits: str,
    concurrency: int,
) -> FleetRow:
    """Run one file as ``invocations`` shard invocations at once; measure it (see the module doc)."""
    root = server.removesuffix("/v1")
    stack: LocalAws = deploy(moto, stack_name=f"fleet{os.getpid()}x{int(time.time() * 1000) % 10**8}")
    lines = [
        json.dumps({"prompt": f"{scenario} {limits} {i}: odd or even?", "max_tokens": MAX_TOKENS})
        for i in range(prompts)
    ]
    body = ("\n".join(lines) + "\n").encode()
    env = invocation_env(
        stack,
        server,
        PROMPTDROP_MAX_CONCURRENCY=str(concurrency),
        PROMPTDROP_SHARD_BYTES=str(len(body) // invocations + 1 if invocations > 1 else len(body) + 1024),
        PROMPTDROP_RPM=str(rpm) if limits == "configured" else "",
        PROMPTDROP_SHARE_LIMITS="false" if limits == "not shared" else "true",
        POWERTOOLS_LOG_LEVEL="INFO",
    )
    key = f"{stack.input_prefix}fleet-{invocations}.jsonl"
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key=key, Body=body)
    with SqsEventSource.for_stack(stack) as source:
        (upload,) = _take(sqs, stack.work_queue_url, 1)
        if invocations == 1:
            events = [source.build_event([upload])]
        else:
            response, _ = _finish(spawn(source.build_event([upload]), env))  # plans the shards
            assert response == {"batchItemFailures": []}, response
            events = [source.build_event([m]) for m in _take(sqs, stack.work_queue_url, invocations)]
    _post(f"{root}/stats/reset")
    _post(f"{moto}/_local/calls")
    runs = [spawn(event, env) for event in events]
    first = last = None
    while any(run.poll() is None for run in runs):
        stats = _get(f"{root}/stats")
        now = time.monotonic()
        if first is None and stats["requests"]:
            first = now - 0.05
        if stats["ok"] >= prompts and last is None:
            last = now - 0.05
        time.sleep(0.1)
    stats = _get(f"{root}/stats")
    calls: dict[str, int] = _get(f"{moto}/_local/calls")
    shared_calls = 0
    for run in runs:
        response, logs = _finish(run)
        if response != {"batchItemFailures": []}:
            raise RuntimeError(f"an invocation handed its message back: {response}")
        shared_calls += sum(
            int(line.get("shared_limits_calls", 0)) for line in logs if line.get("message") == "left the shared limits"
        )
    summary = json.loads(
        s3.get_object(Bucket=stack.bucket, Key=f"{stack.output_prefix}{key}.summary.json")["Body"].read()
    )
    answered = list(stats["prompts_ok"].values())
    sqs.close()
    s3.close()
    return FleetRow(
        scenario=scenario,
        invocations=invocations,
        limits=limits,
        prompts=prompts,
        rpm=rpm,
        answered_once=answered.count(1),
        answered_twice=sum(1 for n in answered if n > 1),
        succeeded=summary["counts"]["succeeded"],
        failed=summary["counts"]["failed"],
        requests=stats["requests"],
        rate_limited=int(stats["status"].get("429", 0)),
        active_s=((last or time.monotonic()) - (first or 0.0)),
        ddb_calls=sum(v for k, v in calls.items() if k.startswith("DynamoDB")),
        shared_calls=shared_calls,
        calls=calls,
    )


def report(rows: list[FleetRow]) -> None:
    print(
        "\n| scenario | invocations | limits | prompts | answered once | failed | % of the server's req/min used "
        "| 429s (% of requests) | DynamoDB calls / 1,000 answers (of which shared limits) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_k = 1000 / max(1, r.succeeded)
        twice = f" ({r.answered_twice} twice)" if r.answered_twice else ""
        print(
            f"| {r.scenario} | {r.invocations} | {r.limits} | {r.prompts} | {r.answered_once}{twice} | {r.failed} | "
            f"{r.used:.1%} | {r.rate_limited} ({r.rate_limited_share:.2%}) | "
            f"{r.ddb_calls * per_k:.1f} ({r.shared_calls * per_k:.1f}) |"
        )
    for r in rows:
        detail = ", ".join(f"{k.removeprefix('DynamoDB.')} {v}" for k, v in sorted(r.calls.items()) if "DynamoDB" in k)
        print(f"  {r.scenario}, {r.invocations} invocations, {r.limits}: DynamoDB calls {detail}")
