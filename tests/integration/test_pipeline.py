"""End to end through the real handler: S3 upload → SQS → handler → fake OpenAI API → S3, DynamoDB, DLQ."""

from __future__ import annotations

import json

from tests.integration.conftest import Pipeline

MIXED = "\n".join(
    [
        json.dumps({"custom_id": "a", "prompt": "first question"}),
        json.dumps({"custom_id": "b", "prompt": "flaky [[fail:500x2]]"}),
        "{this line is broken",
        "",
        json.dumps({"custom_id": "c", "prompt": "rejected [[fail:400]]"}),
        json.dumps(
            {
                "custom_id": "d",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "batch api line"}]},
            }
        ),
        json.dumps({"prompt": "no id, rate limited once [[fail:429x1]]"}),
    ]
)


def test_a_mixed_jsonl_file_lands_exactly_as_designed(pipeline: Pipeline) -> None:
    # Given a file with successes, a transient fault, a broken line and a permanent failure
    key = "inputs/mixed.jsonl"
    pipeline.put(key, MIXED)

    # When the work queue is drained through the real handler
    pipeline.drain()

    # Then the results hold every success once, in input order, in the Batch API output format
    results = pipeline.jsonl(key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == ["a", "b", "d", "line-7"]
    first = results[0]
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["request_id"].startswith("req_")
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Echo: first question"
    assert first["id"].startswith("batch_req_")

    # and the errors file holds each failure once, in input order, with its reason
    errors = pipeline.jsonl(key, ".errors.jsonl")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("line-3", "invalid_line"), ("c", "http_400")]
    assert "not valid JSON" in errors[0]["error"]["message"]
    assert errors[0]["response"] is None
    assert errors[1]["response"]["status_code"] == 400
    assert errors[1]["response"]["body"]["error"]["type"] == "invalid_request_error"

    # and the transient faults were retried: the flaky prompt was sent three times, the others once
    assert pipeline.times_seen("flaky [[fail:500x2]]") == 3
    assert pipeline.times_seen("first question") == 1
    assert pipeline.times_seen("rejected [[fail:400]]") == 1

    # and the summary and the job item agree
    summary = pipeline.summary(key)
    assert summary["status"] == "PARTIAL"
    assert summary["counts"] == {"total": 6, "succeeded": 4, "failed": 2}
    assert summary["tokens"]["total"] > 0
    assert summary["estimated_cost_usd"] is not None
    items = pipeline.items(summary["job_id"])
    job = items["JOB"]
    assert (job["status"], job["total"], job["succeeded"], job["failed"]) == ("PARTIAL", 6, 4, 2)
    assert job["bucket"] == pipeline.bucket
    assert job["key"] == key
    assert job["prompt_tokens"] == summary["tokens"]["prompt"]
    flaky = items["REQ#b"]
    assert (flaky["status"], flaky["attempts"], flaky["line"]) == ("SUCCEEDED", 3, 2)
    assert flaky["finish_reason"] == "stop"
    assert json.loads(flaky["response"])["choices"][0]["message"]["content"].startswith("Echo: flaky")
    assert items["REQ#c"]["status"] == "FAILED"
    assert items["REQ#c"]["error"]["status_code"] == 400
    assert {sk for sk in items if sk.startswith("REQ#")} == {
        "REQ#a",
        "REQ#b",
        "REQ#c",
        "REQ#d",
        "REQ#line-3",
        "REQ#line-7",
    }

    # and the dead-letter queue holds one prompt_failure per failed request, with its reason
    dlq = sorted(pipeline.dlq(), key=lambda m: m["line"])
    assert [(m["kind"], m["custom_id"], m["line"]) for m in dlq] == [
        ("prompt_failure", "line-3", 3),
        ("prompt_failure", "c", 5),
    ]
    rejected = dlq[1]
    assert rejected["job_id"] == summary["job_id"]
    assert (rejected["bucket"], rejected["key"]) == (pipeline.bucket, key)
    assert rejected["etag"]
    assert rejected["request"]["body"]["messages"][0]["content"] == "rejected [[fail:400]]"
    assert rejected["request"]["url"] == "/v1/chat/completions"
    assert rejected["error"]["status_code"] == 400
    assert rejected["attempts"] == 1
    assert rejected["failed_at"]


def test_a_text_file_with_spaces_and_non_ascii_in_its_key(pipeline: Pipeline) -> None:
    key = "inputs/été 2026/rapport final+v2.txt"
    pipeline.put(key, "Résume ce rapport, s'il te plaît.")
    pipeline.drain()
    assert pipeline.output(key, ".out.txt").decode() == "Echo: Résume ce rapport, s'il te plaît."
    (result,) = pipeline.jsonl(key, ".out.jsonl")
    assert result["custom_id"] == key
    assert pipeline.summary(key)["status"] == "SUCCEEDED"


def test_json_and_csv_inputs(pipeline: Pipeline) -> None:
    pipeline.put("inputs/items.json", json.dumps([{"prompt": "one"}, {"prompt": "two", "custom_id": "second"}]))
    pipeline.put("inputs/rows.csv", 'custom_id,prompt\nr1,"hello, csv"\nr2,bye\n')
    pipeline.drain()
    assert [r["custom_id"] for r in pipeline.jsonl("inputs/items.json", ".out.jsonl")] == ["item-1", "second"]
    rows = pipeline.jsonl("inputs/rows.csv", ".out.jsonl")
    assert [r["response"]["body"]["choices"][0]["message"]["content"] for r in rows] == [
        "Echo: hello, csv",
        "Echo: bye",
    ]


def test_a_csv_with_a_prompt_template_in_its_metadata(pipeline: Pipeline) -> None:
    # Given a .csv of data rows, uploaded with its prompt template as the job header
    p = pipeline
    rows = 'id,city,max_tokens\nc1,"Paris, France",5\nc2,Oslo,\nc3,,\n'.replace("id,", "custom_id,", 1)
    template = "Name one museum in {city}."
    p.s3.put_object(
        Bucket=p.bucket, Key="inputs/cities.csv", Body=rows.encode(), Metadata={"promptdrop-template": template}
    )

    p.drain()

    # Then each row was asked with the template filled in; the empty row failed alone, with its line
    choices = {r["custom_id"]: r["response"]["body"]["choices"][0] for r in p.jsonl("inputs/cities.csv", ".out.jsonl")}
    assert choices["c2"]["message"]["content"] == "Echo: Name one museum in Oslo."
    # c1's max_tokens cell went as the number 5: its answer was cut short
    assert "Echo: Name one museum in Paris, France.".startswith(choices["c1"]["message"]["content"])
    assert choices["c1"]["finish_reason"] == "length"
    assert p.times_seen("Name one museum in Paris, France.") == 1
    (error,) = p.jsonl("inputs/cities.csv", ".errors.jsonl")
    assert (error["custom_id"], error["error"]["code"]) == ("c3", "invalid_line")
    assert "['city'] are all empty" in error["error"]["message"]
    assert p.summary("inputs/cities.csv")["counts"] == {"total": 3, "succeeded": 2, "failed": 1}


def test_the_same_upload_delivered_twice_is_answered_once(pipeline: Pipeline) -> None:
    key = "inputs/twice.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": f"q{i}"}) for i in range(5)))
    pipeline.drain()
    first = pipeline.output(key, ".out.jsonl")
    # the same S3 notification arrives again (at-least-once delivery)
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": pipeline.bucket}, "object": {"key": "inputs/twice.jsonl"}},
            }
        ]
    }
    response = pipeline.invoke(event)
    assert response["jobs"][0]["status"] == "SKIPPED"
    assert all(pipeline.times_seen(f"q{i}") == 1 for i in range(5))
    assert pipeline.output(key, ".out.jsonl") == first


def test_bad_files_fail_alone_with_a_file_failure(pipeline: Pipeline) -> None:
    pipeline.put("inputs/notes.pdf", b"%PDF-1.7")
    pipeline.put("inputs/empty.jsonl", b"\n\n")
    pipeline.put("inputs/good.jsonl", json.dumps({"prompt": "still runs"}))
    pipeline.drain()
    failures = sorted(pipeline.dlq(), key=lambda m: m["key"])
    assert [(m["kind"], m["key"], m["error"]["code"]) for m in failures] == [
        ("file_failure", "inputs/empty.jsonl", "empty"),
        ("file_failure", "inputs/notes.pdf", "unsupported_format"),
    ]
    assert pipeline.summary("inputs/good.jsonl")["status"] == "SUCCEEDED"


def test_keys_under_the_output_prefix_are_never_processed(pipeline: Pipeline) -> None:
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": pipeline.bucket}, "object": {"key": "results/x.jsonl"}},
            }
        ]
    }
    assert pipeline.invoke(event) == {"jobs": []}
    assert pipeline.server.stats()["requests"] == 0
