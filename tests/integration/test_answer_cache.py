"""The answer cache through the real handler: a re-upload with one line changed sends one request;
identical lines in one file are sent once; what is cut off is never kept; ``off`` turns it off."""

from __future__ import annotations

import json

from tests.integration.conftest import Pipeline


def lines(prompts: list[str], **extra: object) -> str:
    return "\n".join(json.dumps({"custom_id": f"q{i}", "prompt": p, **extra}) for i, p in enumerate(prompts))


def put(p: Pipeline, key: str, body: str, **metadata: str) -> None:
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=body.encode(), Metadata=metadata)


def requests_sent(p: Pipeline) -> int:
    count: int = p.server.stats()["requests"]
    return count


def cached_items(p: Pipeline, key: str) -> dict[str, bool]:
    items = p.items(p.summary(key)["job_id"])
    return {item["custom_id"]: bool(item.get("cached")) for sk, item in items.items() if sk.startswith("REQ#")}


def test_a_reupload_with_one_line_changed_sends_only_that_line(pipeline: Pipeline) -> None:
    # Given a 20-line file of deterministic requests (temperature 0), answered once
    p = pipeline
    prompts = [f"what is {i} times {i}?" for i in range(20)]
    put(p, "inputs/squares.jsonl", lines(prompts, temperature=0))
    p.drain()
    first = p.jsonl("inputs/squares.jsonl", ".out.jsonl")
    assert requests_sent(p) == 20
    assert p.summary("inputs/squares.jsonl")["cached"] == 0

    # When the file is uploaded again with line 8 changed (a new ETag: a new job)
    p.server.reset()
    prompts[7] = "what is seven times eight?"
    put(p, "inputs/squares.jsonl", lines(prompts, temperature=0))
    p.drain()

    # Then only the changed line was sent; the other 19 came from the cache, as the API first gave them,
    # in input order, costing nothing, marked cached on their items and in the summary
    assert requests_sent(p) == 1
    summary = p.summary("inputs/squares.jsonl")
    assert summary["status"] == "SUCCEEDED"
    assert summary["cached"] == 19
    again = p.jsonl("inputs/squares.jsonl", ".out.jsonl")
    assert [line["custom_id"] for line in again] == [f"q{i}" for i in range(20)]
    assert [line["response"]["body"] for i, line in enumerate(again) if i != 7] == [
        line["response"]["body"] for i, line in enumerate(first) if i != 7
    ]
    assert again[7]["response"]["body"]["choices"][0]["message"]["content"] == "Echo: what is seven times eight?"
    cached = cached_items(p, "inputs/squares.jsonl")
    assert [custom_id for custom_id, hit in cached.items() if not hit] == ["q7"]
    assert (
        summary["tokens"]["total"]
        == sum(  # only the line sent is paid for
            line["response"]["body"]["usage"]["total_tokens"] for line in again[7:8]
        )
    )


def test_identical_lines_in_one_file_are_sent_once(pipeline: Pipeline) -> None:
    p = pipeline
    put(p, "inputs/same.jsonl", lines(["the same question"] * 5 + ["another"], temperature=0))
    p.drain()
    assert requests_sent(p) == 2
    summary = p.summary("inputs/same.jsonl")
    assert (summary["counts"]["succeeded"], summary["cached"]) == (6, 4)
    answers = {
        line["response"]["body"]["choices"][0]["message"]["content"]
        for line in p.jsonl("inputs/same.jsonl", ".out.jsonl")[:5]
    }
    assert answers == {"Echo: the same question"}


def test_only_deterministic_requests_are_kept_and_cut_off_answers_never(pipeline: Pipeline) -> None:
    # Given a file with a sampled request (no temperature), a cut-off one and an embeddings one
    p = pipeline
    body = "\n".join(
        json.dumps(line)
        for line in (
            {"custom_id": "sampled", "prompt": "tell me a story"},
            {"custom_id": "cut", "prompt": "long [[output:truncated]]", "temperature": 0},
            {"custom_id": "vector", "endpoint": "/v1/embeddings", "prompt": "embed me"},
        )
    )
    put(p, "inputs/mixed.jsonl", body)
    p.drain()
    p.server.reset()

    # When the same lines come again in another file
    put(p, "inputs/mixed-again.jsonl", body)
    p.drain()

    # Then only the embeddings answer came from the cache
    assert cached_items(p, "inputs/mixed-again.jsonl") == {"sampled": False, "cut": False, "vector": True}
    assert requests_sent(p) == 2


def test_a_cache_of_off_sends_every_line(pipeline: Pipeline) -> None:
    p = pipeline
    body = lines(["one", "two"], temperature=0)
    put(p, "inputs/a.jsonl", body)
    p.drain()
    p.server.reset()
    put(p, "inputs/b.jsonl", body, **{"promptdrop-cache": "off"})
    p.drain()
    assert requests_sent(p) == 2
    assert p.summary("inputs/b.jsonl")["cached"] == 0
