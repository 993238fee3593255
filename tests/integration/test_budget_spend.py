"""A budget is spent, not a quarter of it (issue 18): the cost guard reserves each request's worst case
while it is in flight, narrows dispatch as the budget nears, resumes as calls settle below their worst
case, and stops only when the next request cannot fit with nothing in flight — through the real handler."""

from __future__ import annotations

import json

import pytest
from promptdrop.formats import Request, request_from_object
from promptdrop.jobs.cost_guard import worst_case

from tests.integration.conftest import Pipeline


def worst_usd(line: str) -> float:
    """The cost guard's worst case of one line, as the function's parser makes it a request."""
    request = request_from_object(
        json.loads(line), line=1, default_id="line-1", default_model="gpt-4o-mini", text_len=len(line)
    )
    assert isinstance(request, Request)
    worst = worst_case(request).usd
    assert worst is not None
    return worst


@pytest.mark.parametrize("concurrency", ["100", "8"])
def test_a_budget_covering_part_of_a_file_is_spent_to_at_least_90_percent_and_never_past_it(
    pipeline: Pipeline, concurrency: str
) -> None:
    # Given 200 prompts that set no output limit (each reserved at the 256-token default estimate) whose
    # answers use about a fifth of it, at the function's default concurrency (100: 200 requests' worst case
    # in flight is far more than the budget) and at a small one, and a budget of 25 requests' worst case
    p = pipeline
    p.configure(PROMPTDROP_MAX_CONCURRENCY=concurrency)
    body = "\n".join(json.dumps({"prompt": f"{i:03} " + "tell me more about budgets " * 7}) for i in range(200))
    budget = 25 * worst_usd(body.splitlines()[0])
    key = "inputs/spend-the-budget.jsonl"
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=body.encode(), Metadata={"promptdrop-budget-usd": f"{budget:.9f}"})

    # When it runs
    p.drain()

    # Then it stopped for its budget part way through the file, having spent 90% to 100% of it, as the
    # summary and the job item both say
    summary = p.summary(key)
    assert summary["status"] == "BUDGET_EXCEEDED"
    done = summary["counts"]["succeeded"]
    assert 25 < done < 200
    spent = summary["estimated_cost_usd"]
    assert 0.9 * budget <= spent <= budget
    job = p.items(summary["job_id"])["JOB"]
    assert float(job["estimated_cost_usd"]) == spent
    assert 0.9 * budget <= float(job["progress_cost_usd"]) <= budget
    assert p.prompts_seen() == done  # nothing sent that was not answered and counted


@pytest.mark.parametrize(
    ("fallback", "status", "answered"), [("fail", "SUCCEEDED", 1), ("standard", "BUDGET_EXCEEDED", 0)]
)
def test_in_flex_mode_a_request_is_reserved_at_flex_unless_it_may_fall_back_to_the_standard_tier(
    pipeline: Pipeline, fallback: str, status: str, answered: int
) -> None:
    # Given a flex file of one gpt-5-mini line and a budget between its worst case at flex and at standard
    p = pipeline
    p.configure(PROMPTDROP_FLEX_FALLBACK=fallback)
    line = json.dumps({"prompt": "a flex question", "model": "gpt-5-mini", "max_tokens": 200})
    request = request_from_object(json.loads(line), line=1, default_id="line-1", default_model="", text_len=len(line))
    assert isinstance(request, Request)
    at_flex, at_standard = worst_case(request, "flex").usd, worst_case(request).usd
    assert at_flex is not None
    assert at_standard is not None
    budget = (at_flex + at_standard) / 2
    key = f"inputs/flex-budget-{fallback}.jsonl"
    metadata = {"promptdrop-budget-usd": f"{budget:.9f}", "promptdrop-mode": "flex"}
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=line.encode(), Metadata=metadata)

    p.drain()

    # Then with no fallback it is reserved (and sent, and priced) at flex; one that may fall back to the
    # standard tier is reserved at standard, where it does not fit
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == (status, answered)
    assert summary["service_tiers"] == ({"flex": 1} if answered else {})
    assert (summary["estimated_cost_usd"] or 0) <= budget
