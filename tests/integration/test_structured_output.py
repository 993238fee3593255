"""Structured output, validated: an answer that is not the JSON asked for is asked again, then fails alone with
the answer kept — through the real handler, against the fake OpenAI API's misbehaving answers."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.conftest import Pipeline

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "string", "enum": ["low", "high"]}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
CHAT_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True}}
RESPONSES_FORMAT = {"format": {"type": "json_schema", "name": "reply", "schema": SCHEMA, "strict": True}}


def chat(custom_id: str, prompt: str, response_format: dict[str, Any] = CHAT_FORMAT) -> str:
    return json.dumps({"custom_id": custom_id, "prompt": prompt, "response_format": response_format})


def responses(custom_id: str, prompt: str) -> str:
    return json.dumps({"custom_id": custom_id, "endpoint": "/v1/responses", "prompt": prompt, "text": RESPONSES_FORMAT})


# (custom_id, the line, the code it fails with — None: answered)
CASES = [
    ("chat-ok", chat("chat-ok", "fine"), None),
    ("chat-json-object", chat("chat-json-object", "reply in json", {"type": "json_object"}), None),
    ("chat-invalid-json", chat("chat-invalid-json", "a [[output:invalid_json:x9]]"), "invalid_output"),
    ("chat-mismatch", chat("chat-mismatch", "b [[output:schema_mismatch:x9]]"), "invalid_output"),
    ("chat-truncated", chat("chat-truncated", "c [[output:truncated:x9]]"), "truncated"),
    ("chat-refused", chat("chat-refused", "d [[output:refusal:x9]]"), "refused"),
    ("chat-filtered", chat("chat-filtered", "e [[output:content_filter:x9]]"), "content_filtered"),
    ("chat-recovers", chat("chat-recovers", "f [[output:schema_mismatch:x1]]"), None),
    ("resp-ok", responses("resp-ok", "fine too"), None),
    ("resp-invalid-json", responses("resp-invalid-json", "g [[output:invalid_json:x9]]"), "invalid_output"),
    ("resp-mismatch", responses("resp-mismatch", "h [[output:schema_mismatch:x9]]"), "invalid_output"),
    ("resp-truncated", responses("resp-truncated", "i [[output:truncated:x9]]"), "truncated"),
    ("resp-refused", responses("resp-refused", "j [[output:refusal:x9]]"), "refused"),
    ("resp-recovers", responses("resp-recovers", "k [[output:refusal:x1]]"), None),
]


def prompt_of(line: str) -> str:
    prompt: str = json.loads(line)["prompt"]
    return prompt


def test_each_unusable_answer_is_asked_again_then_fails_alone_with_the_answer_kept(pipeline: Pipeline) -> None:
    # Given structured-output requests on chat and Responses, some answered wrongly every time, some once
    key = "inputs/structured.jsonl"
    pipeline.put(key, "\n".join(line for _, line, _ in CASES))

    # When they run (PROMPTDROP_OUTPUT_ATTEMPTS: 3 by default)
    pipeline.drain()

    # Then the good ones, and those that recovered on the next answer, are answered with valid JSON
    answered = {r["custom_id"]: r for r in pipeline.jsonl(key, ".out.jsonl")}
    assert set(answered) == {cid for cid, _, code in CASES if code is None}
    content = answered["chat-ok"]["response"]["body"]["choices"][0]["message"]["content"]
    assert set(json.loads(content)) == {"answer", "confidence"}
    assert isinstance(
        json.loads(answered["chat-json-object"]["response"]["body"]["choices"][0]["message"]["content"]), dict
    )
    assert pipeline.times_seen(prompt_of(CASES[7][1])) == 2  # one bad answer, then a good one
    assert pipeline.times_seen(prompt_of(CASES[-1][1])) == 2

    # and each of the others failed with its code after three answers, the last one kept in the error line
    errors = {e["custom_id"]: e for e in pipeline.jsonl(key, ".errors.jsonl")}
    assert {cid: e["error"]["code"] for cid, e in errors.items()} == {cid: code for cid, _, code in CASES if code}
    for custom_id, line, _ in CASES:
        if custom_id in errors:
            assert pipeline.times_seen(prompt_of(line)) == 3, custom_id
            response = errors[custom_id]["response"]
            assert response["status_code"] == 200
            assert response["request_id"].startswith("req_")
            assert response["body"]["object"] in ("chat.completion", "response")
    assert "the answer is not valid JSON" in errors["chat-invalid-json"]["error"]["message"]
    mismatch = errors["resp-mismatch"]["error"]["message"]
    assert mismatch.startswith("the answer does not match the schema: data")
    assert errors["chat-refused"]["response"]["body"]["choices"][0]["message"]["refusal"]
    assert errors["resp-truncated"]["response"]["body"]["status"] == "incomplete"

    # and the dead letters say how many answers were asked for
    letters = {m["custom_id"]: m for m in pipeline.dlq()}
    assert letters["chat-truncated"]["attempts"] == 3
    assert letters["chat-truncated"]["error"]["code"] == "truncated"

    # and every answer is counted in the tokens (and so in the cost and the cost guard): the unusable
    # ones asked again, and those of the requests that failed on them, were paid for as well
    served = pipeline.server.stats()
    summary = pipeline.summary(key)
    tokens = summary["tokens"]
    assert (tokens["prompt"], tokens["completion"]) == (served["prompt_tokens"], served["completion_tokens"])
    items = pipeline.items(summary["job_id"])
    progress = (items["JOB"]["progress_prompt_tokens"], items["JOB"]["progress_completion_tokens"])
    assert progress == (served["prompt_tokens"], served["completion_tokens"])  # what the cost guard reads
    failed_item = items["REQ#chat-mismatch"]
    assert failed_item["status"] == "FAILED"
    assert failed_item["prompt_tokens"] > 0
    assert failed_item["completion_tokens"] > 0


def test_a_plain_text_answer_cut_off_is_an_answer_unless_the_text_policy_is_strict(pipeline: Pipeline) -> None:
    # Given plain-text requests cut off or filtered every time
    lines = "\n".join(
        [
            json.dumps({"custom_id": "cut", "prompt": "long [[output:truncated:x9]]"}),
            json.dumps(
                {"custom_id": "filtered", "endpoint": "/v1/responses", "prompt": "f [[output:content_filter:x9]]"}
            ),
        ]
    )
    # When the policy is accept (the default), they are answers
    pipeline.put("inputs/accept.jsonl", lines)
    pipeline.drain()
    answered = pipeline.jsonl("inputs/accept.jsonl", ".out.jsonl")
    assert [r["custom_id"] for r in answered] == ["cut", "filtered"]
    assert answered[0]["response"]["body"]["choices"][0]["finish_reason"] == "length"

    # and when it is strict, they fail as truncated / content_filtered after PROMPTDROP_OUTPUT_ATTEMPTS answers
    pipeline.configure(PROMPTDROP_TEXT_POLICY="strict", PROMPTDROP_OUTPUT_ATTEMPTS="2")
    pipeline.server.reset()
    pipeline.put("inputs/strict.jsonl", lines)
    pipeline.drain()
    errors = pipeline.jsonl("inputs/strict.jsonl", ".errors.jsonl")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("cut", "truncated"),
        ("filtered", "content_filtered"),
    ]
    assert pipeline.times_seen("long [[output:truncated:x9]]") == 2


def test_a_schema_that_cannot_be_compiled_fails_its_line_before_it_is_sent(pipeline: Pipeline) -> None:
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}}
    bad = {"type": "json_schema", "json_schema": {"name": "r", "schema": remote}}
    key = "inputs/bad-schema.jsonl"
    pipeline.put(key, chat("remote-ref", "x", bad))
    pipeline.drain()
    (error,) = pipeline.jsonl(key, ".errors.jsonl")
    assert error["error"]["code"] == "invalid_schema"
    assert "only references within the schema itself" in error["error"]["message"]
    assert pipeline.server.stats()["requests"] == 0
