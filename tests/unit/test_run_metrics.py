"""A run's figures as CloudWatch metrics: model by model (as the request asked), code by code, job by job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aws_lambda_powertools import Metrics
from promptdrop.jobs import JobResult, RunStatus
from promptdrop.jobs.tally import RunTally
from promptdrop.prices import cost_usd
from promptdrop.records import RequestRecord, RequestStatus
from promptdrop.run_metrics import record_run

NAMESPACE = "promptdrop-unit"


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    shared = Metrics(namespace=NAMESPACE, service="promptdrop")
    shared.clear_metrics()
    yield shared
    shared.clear_metrics()  # Metrics' state is shared by every instance: leave none behind


def answer(model: str, prompt: int, completion: int, tier: str | None = None) -> RequestRecord:
    return RequestRecord("id", 1, RequestStatus.SUCCEEDED, 1, model=model, prompt_tokens=prompt,
                         completion_tokens=completion, service_tier=tier)  # fmt: skip


def lines(out: str) -> dict[tuple[str, ...], dict[str, object]]:
    """The EMF lines printed, by their dimension values (service first dropped)."""
    found = {}
    for text in out.splitlines():
        blob = json.loads(text)
        (dimensions,) = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        found[tuple(blob[d] for d in dimensions if d != "service")] = blob
    return found


def test_a_model_is_the_one_asked_for_and_its_cost_is_priced_at_the_answers_model_and_tier(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose gpt-4o-mini requests were answered by a snapshot, one at the flex tier,
    # a request to a model no price is known for, and failures
    tally = RunTally()
    tally.answered("gpt-4o-mini", answer("gpt-4o-mini-2024-07-18", 1000, 100))
    tally.answered("o4-mini", answer("o4-mini-2025-04-16", 1000, 100, tier="flex"))
    tally.answered("house-model", answer("house-model", 10, 1))
    tally.failed("gpt-4o-mini", "http_400")
    tally.failed(None, "invalid_line")  # a line that is no request names no model
    result = JobResult("j", "b", "k", RunStatus.SUCCEEDED, tally=tally, rate_limited=2)
    result.rate_limited_by_model = {"gpt-4o-mini": 2}

    # When its metrics are recorded
    record_run(metrics, NAMESPACE, result)
    printed = lines(capsys.readouterr().out)

    # Then each model asked for has its own line, with its 429s
    mini = printed[("gpt-4o-mini",)]
    assert (mini["PromptsSucceeded"], mini["PromptsFailed"], mini["RateLimited"]) == ([1.0], [1.0], [2.0])
    assert (mini["PromptTokens"], mini["CompletionTokens"]) == ([1000.0], [100.0])
    # priced at the snapshot's standard rates, and o4-mini's at its flex rates (below the standard ones)
    assert mini["CostUsd"] == [pytest.approx(cost_usd("gpt-4o-mini-2024-07-18", 1000, 100))]
    flex = printed[("o4-mini",)]["CostUsd"]
    assert flex == [pytest.approx(cost_usd("o4-mini-2025-04-16", 1000, 100, tier="flex"))]
    assert flex[0] < (cost_usd("o4-mini-2025-04-16", 1000, 100) or 0)
    # a model with no known price has no cost (an estimate that leaves a model out would mislead)
    assert "CostUsd" not in printed[("house-model",)]
    # and failures by code, the broken line's included
    assert printed[("http_400",)]["PromptsFailed"] == [1.0]
    assert printed[("invalid_line",)]["PromptsFailed"] == [1.0]
    assert printed[("SUCCEEDED",)]["JobsFinished"] == [1.0]
    # while the service-wide cost sums the models priced
    service = metrics.serialize_metric_set()
    assert service["CostUsd"] == [pytest.approx(mini["CostUsd"][0] + flex[0])]


@pytest.mark.parametrize(
    ("status", "ages"),
    [(RunStatus.CONTINUED, True), (RunStatus.SHARD_DONE, True), (RunStatus.SUCCEEDED, False)],
)
def test_a_run_that_leaves_its_job_running_reports_the_jobs_age(
    metrics: Metrics, capsys: pytest.CaptureFixture[str], status: RunStatus, ages: bool
) -> None:
    result = JobResult("j", "b", "k", status, job_started_at="2026-01-01T10:00:00.000+00:00")
    record_run(metrics, NAMESPACE, result, now=datetime(2026, 1, 1, 12, 30, tzinfo=UTC))
    capsys.readouterr()
    service = metrics.serialize_metric_set()
    assert service.get("JobAge") == ([9000.0] if ages else None)  # 2.5 hours, in seconds
    assert "JobsStarted" not in service  # this run did not create the job


def test_a_new_job_is_counted_started(metrics: Metrics, capsys: pytest.CaptureFixture[str]) -> None:
    record_run(metrics, NAMESPACE, JobResult("j", "b", "k", RunStatus.SHARDED, started=True))
    assert capsys.readouterr().out == ""  # nothing by model, code or outcome: it only split the file
    assert metrics.serialize_metric_set()["JobsStarted"] == [1.0]
