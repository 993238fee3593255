"""The cost guard through the real handler: a budget hit mid-file, raised and resumed without paying
twice; a budget in dollars for a model without a price; a cap on requests per file."""

from __future__ import annotations

import json
import re

import pytest
from promptdrop.cli import main, redrive
from promptdrop.formats import Request, request_from_object
from promptdrop.jobs.cost_guard import worst_case

from tests.integration.conftest import Pipeline


def lines(prompts: list[str], **extra: object) -> str:
    return "\n".join(json.dumps({"prompt": p, **extra}) for p in prompts)


def put(p: Pipeline, key: str, body: str, **metadata: str) -> None:
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=body.encode(), Metadata=metadata)


@pytest.fixture
def cli_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.setenv("PROMPTDROP_BUCKET", pipeline.bucket)  # the CLI finds the table in PROMPTDROP_TABLE
    return pipeline


def file_failure(p: Pipeline) -> dict[str, object]:
    (letter,) = [m for m in p.dlq_peek() if m["kind"] == "file_failure"]
    return letter


def test_a_budget_hit_mid_file_stops_it_and_a_raised_budget_resumes_it_paying_nothing_twice(
    cli_env: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 12 prompts with max_tokens 5 (answers use all of it: spent comes close to the worst case)
    # and a budget in the upload's metadata of five and a half requests' worst case
    p = cli_env
    prompts = [f"question number {i:02}" for i in range(12)]
    body = lines(prompts, max_tokens=5)
    first = body.splitlines()[0]
    request = request_from_object(
        json.loads(first), line=1, default_id="line-1", default_model="gpt-4o-mini", text_len=len(first)
    )
    assert isinstance(request, Request)
    worst = worst_case(request).usd
    assert worst is not None
    budget = 5.5 * worst
    key = "inputs/budgeted.jsonl"
    put(p, key, body, **{"promptdrop-budget-usd": f"{budget:.9f}"})

    # When it runs
    p.drain()

    # Then dispatch stopped once the next request's worst case no longer fit: the job is BUDGET_EXCEEDED,
    # what was done is in the outputs, and the spending stayed within the budget
    summary = p.summary(key)
    done = summary["counts"]["succeeded"]
    assert summary["status"] == "BUDGET_EXCEEDED"
    assert 5 <= done < 12
    assert summary["estimated_cost_usd"] <= budget
    assert len(p.jsonl(key, ".out.jsonl")) == done
    job_id = summary["job_id"]
    assert p.items(job_id)["JOB"]["status"] == "BUDGET_EXCEEDED"

    # and one file_failure says what was spent of what, and how many lines are done and left
    letter = file_failure(p)
    error = letter["error"]
    assert isinstance(error, dict)
    assert error["code"] == "budget_exceeded"
    message = str(error["message"])
    assert f"of a budget of ${budget:.6f}" in message
    assert f"{done} line(s) done, {12 - done} left" in message
    assert f"promptdrop budget {job_id} --usd N" in message
    spent = float(re.search(r"\$([0-9.]+) spent", message).group(1))  # type: ignore[union-attr]
    assert spent == pytest.approx(summary["estimated_cost_usd"], abs=1e-6)

    # When the budget is raised on the job and the dead letter redriven
    assert main(["budget", job_id, "--usd", "1"]) == 0
    assert f"promptdrop redrive --job {job_id}" in capsys.readouterr().out
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"file_failure": 1}
    p.drain()

    # Then the job finishes, every prompt answered once: nothing was paid for twice
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 12)
    assert [r["custom_id"] for r in p.jsonl(key, ".out.jsonl")] == [f"line-{i}" for i in range(1, 13)]
    assert all(p.times_seen(q) == 1 for q in prompts)
    assert p.dlq() == []


def test_a_budget_in_dollars_stops_the_file_at_the_first_line_of_a_model_without_a_price(pipeline: Pipeline) -> None:
    # Given a dollar budget in the environment and a file whose second line names a model with no price
    p = pipeline
    p.configure(PROMPTDROP_BUDGET_USD="5")
    key = "inputs/unpriced.jsonl"
    body = lines(["fine"]) + "\n" + json.dumps({"prompt": "local", "model": "my-own-finetune"})
    p.put(key, body)

    p.drain()

    # Then nothing of that model was sent (the file is read once: the line before it was), the
    # outputs hold what was answered, and the file failed with the reason
    assert p.prompts_seen() == 1
    assert p.times_seen("local") == 0
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("FAILED", 1)
    (letter,) = p.dlq()
    assert (letter["kind"], letter["error"]["code"]) == ("file_failure", "unknown_price")
    assert "my-own-finetune" in letter["error"]["message"]
    assert "1 line(s) done, 1 left" in letter["error"]["message"]


def test_a_budget_in_tokens_needs_no_price(pipeline: Pipeline) -> None:
    p = pipeline
    key = "inputs/tokens.jsonl"
    put(p, key, lines(["one", "two"], model="my-own-finetune", max_tokens=20), **{"promptdrop-budget-tokens": "1000"})
    p.drain()
    assert p.summary(key)["status"] == "SUCCEEDED"


def test_max_requests_per_file_then_raised(cli_env: Pipeline) -> None:
    # Given 5 prompts and at most 3 requests for the file
    p = cli_env
    prompts = [f"capped {i}" for i in range(5)]
    key = "inputs/capped.jsonl"
    put(p, key, lines(prompts), **{"promptdrop-max-requests": "3"})

    p.drain()

    # Then exactly 3 were sent, and the job says why it stopped
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("BUDGET_EXCEEDED", 3)
    assert p.prompts_seen() == 3
    message = str(file_failure(p)["error"]["message"])  # type: ignore[index]
    assert "3 of 3 requests sent" in message
    assert "3 of 3 requests were sent (the file's max requests)" in message
    assert "3 line(s) done, 2 left" in message

    # When the cap is raised on the job and the job redriven, the two left are sent, once
    assert main(["budget", summary["job_id"], "--max-requests", "10"]) == 0
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"file_failure": 1}
    p.drain()
    assert p.summary(key)["status"] == "SUCCEEDED"
    assert all(p.times_seen(q) == 1 for q in prompts)


def test_a_redriven_prompt_is_not_sent_past_the_budget_until_it_is_raised(
    cli_env: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file capped at 3 requests whose 3 lines were all sent, one of them failing (a 400, once)
    p = cli_env
    prompts = ["first fine", "second [[fail:400x1]]", "third fine"]
    key = "inputs/capped-redrive.jsonl"
    put(p, key, lines(prompts), **{"promptdrop-max-requests": "3"})
    p.drain()
    summary = p.summary(key)
    assert (summary["counts"]["succeeded"], summary["counts"]["failed"]) == (2, 1)
    assert p.prompts_seen() == 3

    # When its dead letter is redriven: the cap is spent, so it is not sent again
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"prompt_failure": 1}
    p.drain()
    assert p.times_seen(prompts[1]) == 1
    (letter,) = p.dlq_peek()
    assert letter["kind"] == "prompt_failure"
    assert letter["custom_id"] == "line-2"
    assert letter["error"]["code"] == "budget_exceeded"
    assert "3 of 3 requests were sent (the file's max requests)" in letter["error"]["message"]
    assert f"promptdrop budget {summary['job_id']}" in letter["error"]["message"]
    (error_line,) = p.jsonl(key, ".errors.jsonl")
    assert error_line["error"]["code"] == "budget_exceeded"

    # When the cap is raised (status shows it beside what was sent) and the new dead letter redriven,
    # it is sent and answered, once more
    assert main(["budget", summary["job_id"], "--max-requests", "10"]) == 0
    capsys.readouterr()
    assert main(["status", summary["job_id"]]) == 0
    assert "10 requests set on the job (3 sent)" in capsys.readouterr().out
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"prompt_failure": 1}
    p.drain()
    assert p.times_seen(prompts[1]) == 2
    final = p.summary(key)
    assert (final["status"], final["counts"]["succeeded"], final["counts"]["failed"]) == ("SUCCEEDED", 3, 0)
    assert p.dlq_peek() == []


def test_a_budget_that_is_not_a_number_fails_the_file(pipeline: Pipeline) -> None:
    p = pipeline
    put(p, "inputs/bad-budget.jsonl", lines(["x"]), **{"promptdrop-budget-usd": "ten"})
    p.drain()
    (letter,) = p.dlq()
    assert letter["error"]["code"] == "invalid_budget"
    assert p.prompts_seen() == 0


def test_a_sharded_file_shares_its_budget_across_shards(cli_env: Pipeline) -> None:
    # Given a .jsonl split into shards, with at most 20 requests for the whole file
    p = cli_env
    p.configure(PROMPTDROP_SHARD_BYTES="1024")
    prompts = [f"sharded prompt {i:03}" for i in range(150)]
    key = "inputs/sharded-budget.jsonl"
    put(p, key, lines(prompts), **{"promptdrop-max-requests": "20"})

    p.drain()

    # Then the shards together sent 20 (each learns the others' count from the job item), one dead letter
    summary = p.summary(key)
    assert summary["units"] >= 4
    assert (summary["status"], summary["counts"]["succeeded"]) == ("BUDGET_EXCEEDED", 20)
    assert p.prompts_seen() == 20
    letters = [m for m in p.dlq_peek() if m["kind"] == "file_failure"]
    assert [m["error"]["code"] for m in letters] == ["budget_exceeded"]

    # When the cap is lifted and the job redriven, the other 130 are sent, once each
    assert main(["budget", summary["job_id"], "--max-requests", "1000"]) == 0
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"file_failure": 1}
    p.drain()
    summary = p.summary(key)
    assert (summary["status"], summary["counts"]["succeeded"]) == ("SUCCEEDED", 150)
    assert all(p.times_seen(q) == 1 for q in prompts)
