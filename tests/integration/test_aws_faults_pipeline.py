"""Files run through an AWS that struggles (infra/aws_faults/ between the code and moto): every
line is answered or failed exactly once, every job ends final, no invocation hangs.

Only the function's own calls go through the proxy; the test reads S3, DynamoDB and SQS directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from promptdrop import runtime

from infra.aws_faults import AwsFaultProxy, AwsFaultsConfig, FaultKind, FaultRule, Outage, Service
from tests.integration.conftest import Pipeline


@pytest.fixture
def proxy(pipeline: Pipeline) -> Iterator[AwsFaultProxy]:
    with AwsFaultProxy(pipeline.stack.endpoint, AwsFaultsConfig(seed=11)) as running:
        pipeline.configure(AWS_ENDPOINT_URL=running.endpoint)
        runtime.shutdown()  # the container's clients are built for an endpoint: start a new container
        yield running
    runtime.shutdown()


def lines(prefix: str, n: int, *, failing: int | None = None) -> str:
    return "\n".join(
        json.dumps({"prompt": f"{prefix} {i}" + (" [[fail:400]]" if i == failing else "")}) for i in range(1, n + 1)
    )


def assert_exactly_once(p: Pipeline, key: str, n: int, failed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    summary = p.summary(key)
    assert summary["status"] == ("SUCCEEDED" if not failed else "PARTIAL")
    assert summary["counts"] == {"total": n, "succeeded": n - len(failed), "failed": len(failed)}
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == [
        f"line-{i}" for i in range(1, n + 1) if i not in failed
    ]
    assert [r["custom_id"] for r in p.jsonl(key, ".errors.jsonl")] == [f"line-{i}" for i in sorted(failed)]


def test_a_journal_write_that_fails_ends_the_run_at_once_and_the_redelivery_loses_nothing(
    pipeline: Pipeline, proxy: AwsFaultProxy
) -> None:
    # Given a journal write refused mid-run (a permission error: no botocore mode retries it)
    proxy.add_rule(
        FaultRule(
            FaultKind.SERVER_ERROR,
            service=Service.DYNAMODB,
            operations=("BatchWriteItem",),
            code="AccessDeniedException",
            limit=1,
        )
    )
    key = "inputs/journal-refused.jsonl"
    pipeline.put(key, lines("refused", 60))
    (notification,) = [m for m in pipeline.receive_work(2) if "TestEvent" not in m["Body"]]
    event = pipeline.sqs_event(notification)

    # When the handler runs it (under the test's timeout: a hang would fail it here)
    response = pipeline.invoke(event)

    # Then the run ended with its message handed back, the job open, and the fault really happened
    assert response == {"batchItemFailures": [{"itemIdentifier": notification["MessageId"]}]}
    assert pipeline.summary_missing(key)
    assert proxy.stats().faults_of(FaultKind.SERVER_ERROR, service="dynamodb") == 1

    # And the redelivery finishes the job: every line exactly once
    assert pipeline.invoke(event) == {"batchItemFailures": []}
    assert_exactly_once(pipeline, key, 60)


def test_throttling_errors_and_failures_after_the_write_lose_nothing_and_double_nothing(
    pipeline: Pipeline, proxy: AwsFaultProxy
) -> None:
    # Given an AWS that throttles, fails and fails-after-writing a share of every service's calls
    proxy.set_rules(
        [
            FaultRule(FaultKind.THROTTLE, 0.15, service=Service.DYNAMODB),
            FaultRule(FaultKind.UNPROCESSED, 0.3, service=Service.DYNAMODB, operations=("BatchWriteItem",)),
            FaultRule(FaultKind.AFTER_WRITE, 0.05, service=Service.DYNAMODB),
            FaultRule(FaultKind.SERVER_ERROR, 0.05, service=Service.DYNAMODB),
            FaultRule(FaultKind.THROTTLE, 0.1, service=Service.S3),
            FaultRule(FaultKind.SERVER_ERROR, 0.15, service=Service.S3),
            FaultRule(FaultKind.THROTTLE, 0.1, service=Service.SQS),
            FaultRule(FaultKind.AFTER_WRITE, 0.05, service=Service.SQS),
        ]
    )
    files = {f"inputs/struggle-{n}.jsonl": (40, 7 * n) for n in range(1, 4)}
    for key, (n, failing) in files.items():
        pipeline.put(key, lines(key, n, failing=failing))

    # When the work queue is drained through the handler (a message handed back comes round again)
    pipeline.drain()

    # Then each file's lines are there exactly once, and faults of every kind were injected
    for key, (n, failing) in files.items():
        assert_exactly_once(pipeline, key, n, {failing})
    stats = proxy.stats()
    injected = {kind: stats.faults_of(kind) for kind in FaultKind if kind is not FaultKind.OUTAGE}
    assert all(count > 0 for count in injected.values()), injected
    # A failure whose send "failed" after SQS took it may reach the DLQ twice — never zero times.
    letters = [m for m in pipeline.dlq() if m["kind"] == "prompt_failure"]
    assert {(m["key"], m["custom_id"]) for m in letters} == {(k, f"line-{f}") for k, (_, f) in files.items()}


def test_a_dynamodb_outage_of_a_few_seconds_mid_run_loses_nothing(pipeline: Pipeline, proxy: AwsFaultProxy) -> None:
    # Given DynamoDB answering nothing but 500s for 3 s, starting after the run's first 10 calls
    proxy.add_outage(Outage(3.0, service=Service.DYNAMODB, after_calls=10))
    key = "inputs/outage.jsonl"
    pipeline.put(key, lines("outage", 80))

    # When the upload is drained through the handler
    pipeline.drain()

    # Then the outage happened, and the job is exact
    assert proxy.stats().faults_of(FaultKind.OUTAGE, service="dynamodb") > 0
    assert_exactly_once(pipeline, key, 80)
