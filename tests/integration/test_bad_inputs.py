"""The bad-input matrix: every way an input, a key, an event, the configuration or the model can be wrong.

Each case goes through the real handler (S3 upload → notification on the work queue → the SQS
event-source mapping → handler) against moto and the fake OpenAI API, and asserts the exact
outcome: the job's status and counts, the answered lines (every good line answered once, in
order: nothing lost), each failed line's error code and reason in ``.errors.jsonl``, the DLQ
messages, the journal's items and how many calls reached the API.

Every case passes: none is left marked as expected to fail.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import pytest
from aiohttp import web
from promptdrop import runtime
from promptdrop.formats import MAX_DOCUMENT_BYTES, MAX_REQUEST_BYTES
from promptdrop.records import MAX_ERROR_CODE_CHARS, MAX_ERROR_MESSAGE_CHARS
from promptdrop.settings import ConfigurationError

from infra.fake_openai import FakeOpenAIConfig, RunningFakeOpenAI
from tests.integration.conftest import API_KEY, Pipeline

# -- how a case is described and checked ----------------------------------------------------------


@dataclass(frozen=True)
class Failed:
    """One line in ``.errors.jsonl`` (and its ``prompt_failure`` dead letter)."""

    custom_id: str
    code: str
    fragment: str  # a part of the error message that says why


@dataclass(frozen=True)
class Ran:
    """The file ran: these lines answered, in input order, and these failed, in input order."""

    status: str
    answered: tuple[str, ...]
    failed: tuple[Failed, ...] = ()
    api_calls: int | None = None  # calls the fake API received; default: one per answer or API failure

    def expected_calls(self) -> int:
        if self.api_calls is not None:
            return self.api_calls
        return len(self.answered) + sum(1 for f in self.failed if f.code not in ("invalid_line", "invalid_schema"))


@dataclass(frozen=True)
class FileFailed:
    """The whole file failed: one ``file_failure`` dead letter, no outputs, nothing sent to the API."""

    code: str
    fragment: str


@dataclass(frozen=True)
class Case:
    key: str
    data: bytes
    outcome: Ran | FileFailed
    metadata: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def jsonl(*lines: object) -> bytes:
    """A .jsonl of ``lines``: bytes are taken as they are, anything else is dumped as JSON."""
    return b"\n".join(item if isinstance(item, bytes) else json.dumps(item).encode() for item in lines) + b"\n"


def p(custom_id: object, prompt: str | None = None, **extra: Any) -> dict[str, Any]:
    """A short-form line."""
    return {"custom_id": custom_id, "prompt": prompt or f"question {custom_id}", **extra}


def batch(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def invalid(custom_id: str, fragment: str) -> Failed:
    return Failed(custom_id, "invalid_line", fragment)


def schema_line(custom_id: str, schema: object) -> dict[str, Any]:
    """A short-form line asking for structured output of ``schema``."""
    return p(custom_id, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})


def bad_schema(custom_id: str, fragment: str) -> Failed:
    return Failed(custom_id, "invalid_schema", fragment)


WIDE_SCHEMA = {  # 15,500 properties, 0.77 MB: compiling it took 1.2 GB
    "type": "object",
    "properties": {f"p{i:05}": {"type": "string", "maxLength": 9} for i in range(15_500)},
}


# Characters SQS refuses in a message body (SendMessage): what a dead letter must never hold.
SQS_REFUSED = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def run(pipe: Pipeline, case: Case) -> None:
    if case.env:
        pipe.configure(**case.env)
    pipe.s3.put_object(Bucket=pipe.bucket, Key=case.key, Body=case.data, Metadata=case.metadata)
    pipe.drain()


def check(pipe: Pipeline, case: Case, dead: list[dict[str, Any]] | None = None) -> None:
    """Assert the exact outcome; ``dead``: the DLQ's messages when the caller has taken them already."""
    outcome = case.outcome
    dead = pipe.dlq() if dead is None else dead
    if isinstance(outcome, FileFailed):
        assert [(m["kind"], m["key"], m["error"]["code"]) for m in dead] == [("file_failure", case.key, outcome.code)]
        assert outcome.fragment in dead[0]["error"]["message"], dead[0]["error"]["message"]
        job_id = dead[0]["job_id"]
        if job_id is not None:
            assert pipe.items(job_id)["JOB"]["status"] == "FAILED"
        assert pipe.summary_missing(case.key)
        assert pipe.server.stats()["requests"] == 0  # nothing sent, nothing paid for
        return

    summary = pipe.summary(case.key)
    total = len(outcome.answered) + len(outcome.failed)
    assert (summary["status"], summary["counts"]) == (
        outcome.status,
        {"total": total, "succeeded": len(outcome.answered), "failed": len(outcome.failed)},
    )
    # every good line answered, once, in input order
    results = pipe.jsonl(case.key, ".out.jsonl")
    assert [r["custom_id"] for r in results] == list(outcome.answered)
    for result in results:
        assert result["response"]["status_code"] == 200
        assert result["response"]["body"]["choices"][0]["message"]["content"].startswith("Echo: ")
    # every failed line, once, in input order, with its reason
    errors = pipe.jsonl(case.key, ".errors.jsonl")
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [(f.custom_id, f.code) for f in outcome.failed]
    for error, expected in zip(errors, outcome.failed, strict=True):
        assert expected.fragment in error["error"]["message"], error["error"]["message"]
    # one dead letter per failed line
    assert sorted((m["kind"], m["custom_id"], m["error"]["code"]) for m in dead) == sorted(
        ("prompt_failure", f.custom_id, f.code) for f in outcome.failed
    )
    # the journal agrees
    items = pipe.items(summary["job_id"])
    job = items["JOB"]
    assert (job["status"], job["total"], job["succeeded"], job["failed"]) == (
        outcome.status,
        total,
        len(outcome.answered),
        len(outcome.failed),
    )
    assert sum(1 for sk in items if sk.startswith(("REQ#", "DUP#"))) == total
    assert pipe.server.stats()["requests"] == outcome.expected_calls()


# -- the matrix ---------------------------------------------------------------------------------

LONG_PROMPT = "x" * 200_000  # past Python's default csv field limit of 131,072 characters
NESTED = b"[" * 100_000 + b"]" * 100_000

CASES: dict[str, Case | Any] = {
    # encodings
    "jsonl-utf8-bom": Case("inputs/bom.jsonl", b"\xef\xbb\xbf" + jsonl(p("a"), p("b")), Ran("SUCCEEDED", ("a", "b"))),
    "jsonl-crlf": Case(
        "inputs/crlf.jsonl", jsonl(p("a"), p("b")).replace(b"\n", b"\r\n"), Ran("SUCCEEDED", ("a", "b"))
    ),
    "jsonl-only-a-bom": Case("inputs/only-bom.jsonl", b"\xef\xbb\xbf\r\n", FileFailed("empty", "no requests")),
    "jsonl-invalid-utf8-line": Case(
        "inputs/latin1-line.jsonl",
        jsonl(p("a"), b'{"custom_id": "b", "prompt": "caf\xe9"}', p("c")),
        Ran("PARTIAL", ("a", "c"), (invalid("line-2", "not valid UTF-8 (byte 33)"),)),
    ),
    "jsonl-utf16": Case(
        "inputs/utf16.jsonl", json.dumps(p("a")).encode("utf-16"), FileFailed("undecodable", "save it as UTF-8")
    ),
    "txt-latin1": Case("inputs/latin1.txt", "café".encode("latin-1"), FileFailed("undecodable", "not valid UTF-8")),
    "txt-only-whitespace": Case("inputs/blank.txt", b" \r\n\t\n ", FileFailed("empty", "no requests")),
    "jsonl-lone-surrogate": Case(
        "inputs/surrogate.jsonl",
        jsonl(p("a"), b'{"custom_id": "b", "prompt": "half \\ud800 a pair"}', p("c")),
        Ran("PARTIAL", ("a", "c"), (invalid("b", "lone surrogate (\\ud800)"),)),
    ),
    "jsonl-surrogate-pair": Case(
        "inputs/pair.jsonl", jsonl(b'{"custom_id": "a", "prompt": "smile \\ud83d\\ude00"}'), Ran("SUCCEEDED", ("a",))
    ),
    # JSON pathologies
    "jsonl-nested-100000-deep": Case(
        "inputs/deep.jsonl",
        jsonl(p("a"), NESTED, p("c")),
        Ran("PARTIAL", ("a", "c"), (invalid("line-2", "nest deeper than 100 levels"),)),
    ),
    "jsonl-nan-infinity-1e400": Case(
        "inputs/nan.jsonl",
        jsonl(
            p("a"),
            b'{"custom_id": "n", "prompt": "x", "temperature": NaN}',
            b'{"custom_id": "i", "prompt": "x", "temperature": Infinity}',
            b'{"custom_id": "m", "prompt": "x", "temperature": -Infinity}',
            b'{"custom_id": "e", "prompt": "x", "temperature": 1e400}',
            p("z"),
        ),
        Ran(
            "PARTIAL",
            ("a", "z"),
            (
                invalid("line-2", "NaN is not valid JSON"),
                invalid("line-3", "Infinity is not valid JSON"),
                invalid("line-4", "-Infinity is not valid JSON"),
                invalid("line-5", "1e400 is too large for a 64-bit float"),
            ),
        ),
    ),
    "jsonl-5000-digit-integer": Case(
        "inputs/bigint.jsonl",
        jsonl(b'{"custom_id": "a", "prompt": "x", "seed": ' + b"9" * 5000 + b"}", p("b")),
        Ran("PARTIAL", ("b",), (invalid("line-1", "an integer of 5,000 digits"),)),
    ),
    "jsonl-repeated-key": Case(
        "inputs/dupkey.jsonl",
        jsonl(b'{"custom_id": "a", "prompt": "one", "prompt": "two"}', p("b")),
        Ran("PARTIAL", ("b",), (invalid("line-1", 'the key "prompt" appears twice'),)),
    ),
    "jsonl-raw-control-character": Case(
        "inputs/control.jsonl",
        jsonl(b'{"custom_id": "a", "prompt": "tab\x01in"}', p("b")),
        Ran("PARTIAL", ("b",), (invalid("line-1", "Invalid control character"),)),
    ),
    "jsonl-broken-and-non-object-lines": Case(
        "inputs/shapes.jsonl",
        jsonl(b"{broken", b"[1, 2]", b'"text"', b"null", p("e")),
        Ran(
            "PARTIAL",
            ("e",),
            (
                invalid("line-1", "not valid JSON"),
                invalid("line-2", "expected a JSON object, got an array"),
                invalid("line-3", "got a string"),
                invalid("line-4", "got null"),
            ),
        ),
    ),
    "json-nested-too-deep": Case(
        "inputs/deep.json", b"[" + b'{"prompt": ' + NESTED + b"}]", FileFailed("too_deep", "deeper than 100 levels")
    ),
    "json-trailing-comma": Case(
        "inputs/comma.json", b'[{"prompt": "a"},]', FileFailed("invalid_json", "Expecting value at line 1 column 18")
    ),
    "json-refused-items-fail-alone": Case(
        "inputs/items.json",
        b'[{"prompt": "a"}, {"prompt": NaN}, {"prompt": "c", "prompt": "d"}, 7, {"custom_id": "e", "prompt": "e"}]',
        Ran(
            "PARTIAL",
            ("item-1", "e"),
            (
                invalid("item-2", "NaN is not valid JSON"),
                invalid("item-3", "appears twice"),
                invalid("item-4", "expected a JSON object, got an integer"),
            ),
        ),
    ),
    "json-empty-array": Case("inputs/empty.json", b" [ ] ", FileFailed("empty", "holds no requests")),
    # structured-output schemas: each fails its line before anything is sent, the rest runs
    "schemas-invalid-recursive-huge-or-backtracking": Case(
        "inputs/schemas.jsonl",
        jsonl(
            schema_line("regex", {"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-"}}}),
            schema_line("props", {"type": "object", "properties": "name"}),
            schema_line("self", {"$ref": "#"}),
            schema_line(
                "mutual",
                {
                    "definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"allOf": [{"$ref": "#/definitions/a"}]}},
                    "$ref": "#/definitions/a",
                },
            ),
            schema_line("wide", WIDE_SCHEMA),
            schema_line("redos", {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}),
            p("ok"),
        ),
        Ran(
            "PARTIAL",
            ("ok",),
            (
                bad_schema("regex", "pattern '[a-' is not a valid regular expression: unterminated character set"),
                bad_schema("props", "#/properties must be an object of schemas"),
                bad_schema("self", "$ref '#' refers back to itself without going into the answer"),
                bad_schema("mutual", "refers back to itself without going into the answer"),
                bad_schema("wide", "characters; the limit is 100,000"),
                bad_schema("redos", "pattern '^(a+)+$' repeats a part that can match the same text in many ways"),
            ),
        ),
    ),
    # request shapes
    "batch-body-not-an-object": Case(
        "inputs/body.jsonl",
        jsonl({"custom_id": "a", "url": "/v1/chat/completions", "body": "hello"}, p("b")),
        Ran("PARTIAL", ("b",), (invalid("a", "body: Input should be a valid dictionary"),)),
    ),
    "batch-messages-not-a-list": Case(
        "inputs/messages.jsonl",
        jsonl(batch("a", {"messages": "hello"}), {"custom_id": "b", "messages": "hello"}, p("c")),
        Ran(
            "PARTIAL",
            ("c",),
            (invalid("a", 'needs a non-empty "messages" list'), invalid("b", "messages: Input should be a valid list")),
        ),
    ),
    "stream-prompt-and-messages-empty-prompt": Case(
        "inputs/misc.jsonl",
        jsonl(
            p("a", stream=True),
            {"custom_id": "b", "prompt": "x", "messages": user("y")},
            p("c", prompt=" "),
            {"custom_id": "d", "prompt": 42},
            p("e"),
        ),
        Ran(
            "PARTIAL",
            ("e",),
            (
                invalid("a", '"stream": true is not supported'),
                invalid("b", 'give exactly one of "prompt" or "messages"'),
                invalid("c", "prompt: is empty"),
                invalid("d", "prompt: Input should be a valid string"),
            ),
        ),
    ),
    # custom_ids
    "custom-id-wrong-types": Case(
        "inputs/id-types.jsonl",
        jsonl(p("a"), p(True), p(1.5), p([1]), p({"k": 1}), p(7), p("z")),
        Ran(
            "PARTIAL",
            ("a", "7", "z"),
            (
                invalid("line-2", "custom_id must be a string (or an integer), got a boolean"),
                invalid("line-3", "got a number"),
                invalid("line-4", "got an array"),
                invalid("line-5", "got an object"),
            ),
        ),
    ),
    "custom-id-empty": Case(
        "inputs/id-empty.jsonl",
        jsonl(p(""), p("b")),
        Ran("PARTIAL", ("b",), (invalid("line-1", "custom_id is empty"),)),
    ),
    "custom-id-2000-chars": Case(
        "inputs/id-long.jsonl",
        jsonl(p("x" * 2000), p("b")),
        Ran("PARTIAL", ("b",), (invalid("line-1", "custom_id is 2,000 bytes in UTF-8; the limit is 512"),)),
    ),
    "custom-id-512-bytes-and-unicode": Case(
        "inputs/id-limit.jsonl",
        jsonl(p("é" * 256), p("日本語 🙂 id"), p("a/b#c?d")),
        Ran("SUCCEEDED", ("é" * 256, "日本語 🙂 id", "a/b#c?d")),
    ),
    "custom-id-characters-sqs-refuses": Case(
        "inputs/id-chars.jsonl",
        jsonl(p("nul\x00"), p("bad\uffff"), p("tab\there"), p("ok")),
        Ran(
            "PARTIAL",
            ("ok",),
            (
                invalid("line-1", "custom_id holds U+0000 at character 4"),
                invalid("line-2", "custom_id holds U+FFFF at character 4"),
                invalid("line-3", "custom_id holds U+0009"),
            ),
        ),
    ),
    "custom-id-repeated-and-int-vs-string": Case(
        "inputs/id-repeat.jsonl",
        jsonl(p("a"), p(7), p("a"), p("7")),
        Ran(
            "PARTIAL",
            ("a", "7"),
            (invalid("a", "is already used by line 1"), invalid("7", "is already used by line 2")),
        ),
    ),
    "custom-id-aliasing-an-internal-key": pytest.param(
        Case(
            "inputs/id-alias.jsonl",
            jsonl(p("dup", "first"), p("dup", "second"), p("dup#line-2", "third")),
            Ran("PARTIAL", ("dup", "dup#line-2"), (invalid("dup", "is already used by line 1"),)),
        ),
    ),
    # parameters
    "unknown-short-form-keys": Case(
        "inputs/params.jsonl",
        jsonl(p("a", foo=1), p("b", metadata_x="m"), p("c", metadata={"team": "x"}, store=True, temperature=0), p("d")),
        Ran(
            "PARTIAL",
            ("c", "d"),
            (
                invalid("a", 'unknown parameter "foo": not sent'),
                invalid("b", 'unknown parameter "metadata_x"'),
            ),
        ),
    ),
    "batch-body-unknown-parameter": pytest.param(
        Case(
            "inputs/batch-params.jsonl",
            jsonl(batch("a", {"messages": user("hi"), "foo": 1}), p("b")),
            Ran("PARTIAL", ("b",), (Failed("a", "http_400", "Unrecognized request argument supplied: foo"),)),
        ),
    ),
    "batch-messages-of-strings": pytest.param(
        Case(
            "inputs/batch-strings.jsonl",
            jsonl(batch("a", {"messages": ["hi"]}), p("b")),
            Ran("PARTIAL", ("b",), (Failed("a", "invalid_type", "messages"),)),
        ),
    ),
    "csv-wrong-type-parameter-cell": pytest.param(
        Case(
            "inputs/csv-types.csv",
            b"custom_id,prompt,temperature\na,hi,hot\nb,hello,0.5\n",
            Ran("PARTIAL", ("b",), (Failed("a", "invalid_type", "temperature"),)),
        ),
    ),
    # .csv pathologies
    "csv-extra-columns-carried-not-sent": Case(
        "inputs/extra.csv",
        b"custom_id,prompt,region,notes,max_tokens\na,hi,EU,call back,\nb,hello,US,,5\n",
        Ran("SUCCEEDED", ("a", "b")),
    ),
    "csv-field-over-131072-chars": Case(
        "inputs/wide.csv",
        f'custom_id,prompt\nbig,"{LONG_PROMPT}"\nsmall,hi\n'.encode(),
        Ran("SUCCEEDED", ("big", "small")),
    ),
    "csv-nul-bytes": Case(
        "inputs/nul.csv", b"custom_id,prompt\r\na,hi\x00there\r\nb,bye\r\n", Ran("SUCCEEDED", ("a", "b"))
    ),
    "csv-column-named-twice": Case(
        "inputs/twice.csv", b"prompt,custom_id,prompt\na,b,c\n", FileFailed("invalid_csv", "'prompt' more than once")
    ),
    "csv-header-only": Case("inputs/header.csv", b"custom_id,prompt\r\n", FileFailed("empty", "a header but no rows")),
    "csv-unterminated-quote": Case(
        "inputs/quote.csv",
        b'custom_id,prompt\na,fine\nb,"never closed\nc,lost\n',
        FileFailed("invalid_csv", "row 3 (read up to line 4): unexpected end of data"),
    ),
    "csv-row-with-more-cells-than-the-header": Case(
        "inputs/cells.csv",
        b"custom_id,prompt\na,hello, world\nb,fine\n",
        Ran("PARTIAL", ("b",), (invalid("line-2", "the row has 3 cells but the header 2 columns"),)),
    ),
    "csv-template-naming-a-missing-column": Case(
        "inputs/template.csv",
        b"city\nOslo\n",
        FileFailed("invalid_template", "{town} names no column"),
        metadata={"promptdrop-template": "Museums in {town}?"},
    ),
    "csv-template-naming-an-800-kb-cell-600-times": Case(
        "inputs/template-600.csv",
        b"c\n" + b"y" * 800_000 + b"\nOslo\n",
        Ran("PARTIAL", ("line-3",), (invalid("line-2", "the template builds a prompt of 480,000,000 characters"),)),
        metadata={"promptdrop-template": "{c}" * 600},  # 1,800 bytes: within S3's 2 KB of metadata
    ),
    # sizes
    "jsonl-line-over-1-mib": Case(
        "inputs/big-line.jsonl",
        jsonl(p("a"), p("b", "y" * MAX_REQUEST_BYTES), p("c")),
        Ran("PARTIAL", ("a", "c"), (invalid("line-2", "longer than 1,048,576 bytes (1 MiB)"),)),
    ),
    "jsonl-3-mib-without-a-newline": Case(
        "inputs/no-newline.jsonl",
        b'{"prompt": "' + b"z" * (3 * MAX_REQUEST_BYTES),
        Ran("FAILED", (), (invalid("line-1", "longer than 1,048,576 bytes"),)),
    ),
    "txt-over-1-mib": Case(
        "inputs/big.txt", b"w" * (MAX_REQUEST_BYTES + 1), FileFailed("too_large", "a .txt is one prompt")
    ),
    "json-over-32-mib": Case(
        "inputs/big.json",
        b'[{"prompt": "' + b"v" * MAX_DOCUMENT_BYTES + b'"}]',
        FileFailed("too_large", "use .jsonl for larger files"),
    ),
    # numbers past every bound: an integer nothing takes, a budget past what the guard can count
    "budget-tokens-400-digits": Case(
        "inputs/budget-digits.jsonl",
        jsonl(p("a")),
        FileFailed("invalid_budget", "is not a whole number above 0 and at most 1e+15"),
        metadata={"promptdrop-budget-tokens": "9" * 400},
    ),
    "max-requests-400-digits": Case(
        "inputs/requests-digits.jsonl",
        jsonl(p("a")),
        FileFailed("invalid_budget", "promptdrop-max-requests='99999"),
        metadata={"promptdrop-max-requests": "9" * 400},
    ),
    "max-tokens-10-to-the-400-under-a-dollar-budget": Case(
        "inputs/max-tokens-huge.jsonl",
        jsonl(p("a", max_tokens=10**400), p("b", max_tokens=2**63), p("c", seed=-(2**63)), p("d")),
        Ran(
            "PARTIAL",
            ("c", "d"),
            (
                invalid("line-1", "outside the signed 64-bit range"),
                invalid("line-2", "the integer 9223372036854775808"),
            ),
        ),
        metadata={"promptdrop-budget-usd": "5"},
    ),
    # keys
    "key-spaces-unicode-plus-percent": Case(
        "inputs/été 2026/c++ notes 100% (final).jsonl", jsonl(p("a")), Ran("SUCCEEDED", ("a",))
    ),
    "key-uppercase-suffix": Case("inputs/SHOUT.JSONL", jsonl(p("a")), Ran("SUCCEEDED", ("a",))),
    "key-unknown-suffix": Case(
        "inputs/notes.pdf", b"%PDF-1.7", FileFailed("unsupported_format", "unknown suffix '.pdf'")
    ),
    "txt-key-too-long-to-be-its-id": Case(
        "inputs/" + "k" * 600 + ".txt", b"hello from a long key", Ran("SUCCEEDED", ("line-1",))
    ),
    # the model answering garbage
    "model-malformed-once-then-fine": Case(
        "inputs/malformed.jsonl",
        jsonl(p("a", "half a body [[malformed:x1]]"), p("b")),
        Ran("SUCCEEDED", ("a", "b"), api_calls=3),
    ),
    "model-always-malformed": Case(
        "inputs/malformed-always.jsonl",
        jsonl(p("a", "garbage [[malformed:x9]]"), p("b")),
        Ran("PARTIAL", ("b",), (Failed("a", "malformed_response", "not JSON"),), api_calls=3),
        env={"PROMPTDROP_MAX_ATTEMPTS": "2"},
    ),
    # answers that are not answers (issue 20): retried as malformed, then failed; never a success
    "model-answers-with-nothing-in-it": Case(
        "inputs/not-answers.jsonl",
        jsonl(
            p("queued", "later [[output:queued]]", endpoint="/v1/responses"),
            p("failed", "broken [[output:failed]]", endpoint="/v1/responses"),
            p("no-choices", "nothing [[output:empty]]"),
            p("no-data", "no vectors [[output:empty]]", endpoint="/v1/embeddings"),
            p("model", "which model [[output:bad_model]]"),
            p("b"),
        ),
        Ran(
            "PARTIAL",
            ("b",),
            (
                Failed("queued", "malformed_response", "the response is 'queued', not an answer"),
                Failed("failed", "malformed_response", "'failed', not an answer: The model failed to generate"),
                Failed("no-choices", "malformed_response", "a chat completion with an empty choices list"),
                Failed("no-data", "malformed_response", "an embeddings list with an empty data list"),
                Failed("model", "malformed_response", "the answer's model is list, not a string"),
            ),
            api_calls=5 * 2 + 1,
        ),
        env={"PROMPTDROP_MAX_ATTEMPTS": "2"},
    ),
    "model-answers-json-nested-5000-deep": Case(
        "inputs/deep.jsonl",
        jsonl(p("deep", "JSON please [[output:deep]]", response_format={"type": "json_object"}), p("b")),
        Ran("PARTIAL", ("b",), (Failed("deep", "too_deep", "nests deeper than 100 levels"),), api_calls=2 + 1),
        env={"PROMPTDROP_OUTPUT_ATTEMPTS": "2"},
    ),
    "responses-background": Case(
        "inputs/background.jsonl",
        jsonl(p("bg", endpoint="/v1/responses", background=True), p("b")),
        Ran("PARTIAL", ("b",), (invalid("bg", '"background": true is not supported'),)),
    ),
    "model-hangs-once": Case(
        "inputs/hang.jsonl",
        jsonl(p("a", "slow [[hang:x1]]"), p("b")),
        Ran("SUCCEEDED", ("a", "b"), api_calls=3),
        env={"PROMPTDROP_REQUEST_TIMEOUT_S": "1"},
    ),
    "model-500-until-attempts-run-out": Case(
        "inputs/500.jsonl",
        jsonl(p("a", "down [[fail:500]]"), p("b")),
        Ran("PARTIAL", ("b",), (Failed("a", "http_500", "had an error"),), api_calls=3),
        env={"PROMPTDROP_MAX_ATTEMPTS": "2"},
    ),
    "model-400-404-422": Case(
        "inputs/4xx.jsonl",
        jsonl(p("a", "no [[fail:400]]"), p("b", "where [[fail:404]]"), p("c", "what [[fail:422]]"), p("d")),
        Ran(
            "PARTIAL",
            ("d",),
            (
                Failed("a", "http_400", "Injected bad request"),
                Failed("b", "model_not_found", "does not exist"),
                Failed("c", "http_422", "unprocessable"),
            ),
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input(pipeline: Pipeline, case: Case) -> None:
    run(pipeline, case)
    check(pipeline, case)


# -- cases that need more than an upload ----------------------------------------------------------


def test_csv_columns_that_are_not_parameters_never_reach_the_api(pipeline: Pipeline) -> None:
    # the dead letter carries the request exactly as it was sent: no carried column in it
    case = Case(
        "inputs/carried.csv",
        b"custom_id,prompt,region,temperature\na,refused [[fail:400]],EU,0.5\nb,fine,US,\n",
        Ran("PARTIAL", ("b",), (Failed("a", "http_400", "Injected bad request"),)),
    )
    run(pipeline, case)
    dead = pipeline.dlq()
    sent = {"temperature": 0.5, "messages": user("refused [[fail:400]]"), "model": "gpt-4o-mini"}
    assert dead[0]["request"]["body"] == sent
    check(pipeline, case, dead)


def test_a_sharded_jsonl_fails_the_same_lines_the_same_way(pipeline: Pipeline) -> None:
    # the shard planner reads ids with custom_id_of; the shards parse with the parser: they agree
    pipeline.configure(PROMPTDROP_SHARD_BYTES="1024")
    lines = [p(f"q{i}") for i in range(30)]
    lines[3] = p(True)  # fails as line-4
    lines[20] = p("q1")  # repeats line 2, in another shard
    data = b"\xef\xbb\xbf" + jsonl(*lines[:10], b'{"prompt": "' + b"y" * MAX_REQUEST_BYTES + b'"}', *lines[10:])
    answered = tuple(f"q{i}" for i in range(30) if i not in (3, 20))
    case = Case(
        "inputs/sharded.jsonl",
        data,
        Ran(
            "PARTIAL",
            answered,
            (
                invalid("line-4", "got a boolean"),
                invalid("line-11", "longer than 1,048,576 bytes"),
                invalid("q1", "is already used by line 2"),
            ),
        ),
    )
    run(pipeline, case)
    check(pipeline, case)
    assert pipeline.summary(case.key)["units"] == 2  # lines 1-11 (line 2) and 12-31 (line 21, its repeat)


def test_an_object_deleted_before_its_event_runs_fails_as_not_found(pipeline: Pipeline) -> None:
    pipeline.put("inputs/gone.jsonl", jsonl(p("a")))
    pipeline.s3.delete_object(Bucket=pipeline.bucket, Key="inputs/gone.jsonl")
    pipeline.drain()
    (dead,) = pipeline.dlq()
    assert (dead["kind"], dead["job_id"], dead["error"]["code"]) == ("file_failure", None, "not_found")
    assert pipeline.server.stats()["requests"] == 0


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        "",
        json.dumps([1, 2]),
        json.dumps({"hello": "world"}),
        json.dumps({"kind": "prompt_failure", "job_id": "j"}),  # fields missing
        json.dumps(
            {"kind": "unit", "job_id": "j", "bucket": "b", "key": "k", "etag": "e", "unit": "all", "start": "x"}
        ),
        json.dumps({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {}}}]}),
        NESTED.decode(),
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "unknown-shape",
        "prompt-failure-missing-fields",
        "unit-bad-start",
        "s3-no-key",
        "nested-100000-deep",
    ],
)
def test_a_malformed_message_is_acknowledged_and_nothing_runs(pipeline: Pipeline, body: str) -> None:
    pipeline.drain()  # the queue's s3:TestEvent
    pipeline.sqs.send_message(QueueUrl=pipeline.stack.work_queue_url, MessageBody=body or " ")
    assert pipeline.drain() == 1  # received once: acknowledged, not redelivered until it dead-letters
    assert pipeline.dlq() == []
    assert pipeline.server.stats()["requests"] == 0
    assert pipeline.s3.list_objects_v2(Bucket=pipeline.bucket, Prefix="results/").get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("key", "why"),
    [("results/inputs/x.jsonl", "output prefix"), ("elsewhere/x.jsonl", "outside the input prefix")],
)
def test_events_for_keys_this_function_does_not_own_run_nothing(pipeline: Pipeline, key: str, why: str) -> None:
    pipeline.configure(PROMPTDROP_INPUT_PREFIX="inputs/")
    pipeline.s3.put_object(Bucket=pipeline.bucket, Key=key, Body=jsonl(p("a")))
    assert pipeline.invoke(pipeline.s3_event(key)) == {"jobs": []}, why
    assert pipeline.server.stats()["requests"] == 0
    assert pipeline.dlq() == []


def test_a_non_create_s3_event_is_skipped(pipeline: Pipeline) -> None:
    event = pipeline.s3_event("inputs/x.jsonl")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert pipeline.invoke(event) == {"jobs": []}
    assert pipeline.server.stats()["requests"] == 0


# The invocation fails before it records a metric: Powertools warns that it has none to publish.
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PROMPTDROP_MAX_CONCURRENCY",
            "0",
            "PROMPTDROP_MAX_CONCURRENCY='0': Input should be greater than or equal to 1",
        ),
        ("PROMPTDROP_MAX_ATTEMPTS", "many", "PROMPTDROP_MAX_ATTEMPTS='many': Input should be a valid integer"),
        ("PROMPTDROP_REQUEST_TIMEOUT_S", "inf", "PROMPTDROP_REQUEST_TIMEOUT_S='inf': Input should be a finite number"),
        ("PROMPTDROP_OUTPUT_PREFIX", "/results/", "PROMPTDROP_OUTPUT_PREFIX='/results/': S3 key prefixes do not start"),
        ("PROMPTDROP_TABLE", None, "PROMPTDROP_TABLE is not set (DynamoDB table"),
        ("PROMPTDROP_BUDGET_TOKENS", "9" * 400, "Input should be less than or equal to 1000000000000000"),
        ("PROMPTDROP_MAX_REQUESTS", "9" * 400, "PROMPTDROP_MAX_REQUESTS='9999999999"),
    ],
)
def test_a_bad_configuration_fails_the_invocation_naming_the_variable(
    pipeline: Pipeline, variable: str, value: str | None, message: str
) -> None:
    pipeline.put("inputs/config.jsonl", jsonl(p("a")))
    if value is None:
        pipeline.monkeypatch.delenv(variable)
        pipeline.configure()
    else:
        pipeline.configure(**{variable: value})
    with pytest.raises(ConfigurationError) as info:
        pipeline.invoke(pipeline.s3_event("inputs/config.jsonl"))
    assert message in str(info.value)
    assert variable.removeprefix("PROMPTDROP_").lower() + "\n" not in str(info.value)
    assert pipeline.server.stats()["requests"] == 0


def test_a_table_that_does_not_exist_hands_the_message_back_until_sqs_dead_letters_it(pipeline: Pipeline) -> None:
    pipeline.drain()  # the queue's s3:TestEvent
    pipeline.configure(PROMPTDROP_TABLE="no-such-table")
    pipeline.put("inputs/nowhere.jsonl", jsonl(p("a")))
    assert pipeline.drain() == 5  # received 5 times (the template's maxReceiveCount), then moved by SQS
    (dead,) = pipeline.dlq()
    assert unquote_plus(dead["Records"][0]["s3"]["object"]["key"]) == "inputs/nowhere.jsonl"  # the notification
    assert pipeline.server.stats()["requests"] == 0


# -- limits whose enforcement belongs to the AWS adapters (lead engineer) --------------------------


def test_ten_dead_letters_of_240_kb_are_sent_in_batches_sqs_accepts(pipeline: Pipeline) -> None:
    # Given ten long documents the API refuses (400): ten dead letters of ~240 KB each, 2.4 MB in
    # all, where one SendMessageBatch takes 256 KiB (moto refuses a larger batch, as SQS does)
    long_docs = [p(f"doc{i}", f"{i} " + "w" * 235_000 + " [[fail:400]]") for i in range(10)]
    case = Case(
        "inputs/long-docs.jsonl",
        jsonl(*long_docs, p("ok")),
        Ran("PARTIAL", ("ok",), tuple(Failed(f"doc{i}", "http_400", "Injected bad request") for i in range(10))),
    )

    # When the file runs
    run(pipeline, case)

    # Then the job ends, every document dead-lettered whole (its request kept: a redrive can send it)
    dead = pipeline.dlq()
    assert all(len(m["request"]["body"]["messages"][0]["content"]) > 235_000 for m in dead)
    check(pipeline, case, dead)


def test_a_dead_letter_never_holds_a_character_sqs_refuses(pipeline: Pipeline) -> None:
    # U+FFFF is valid JSON and a valid prompt; SQS refuses it in a message body (moto does not)
    prompt = "odd \uffff char [[fail:400]]"
    case = Case(
        "inputs/odd.jsonl",
        jsonl(p("a", prompt), p("b")),
        Ran("PARTIAL", ("b",), (Failed("a", "http_400", "Injected bad request"),)),
    )
    run(pipeline, case)
    raw = pipeline.sqs.receive_message(QueueUrl=pipeline.stack.dlq_url, WaitTimeSeconds=0)["Messages"][0]["Body"]
    assert SQS_REFUSED.search(raw) is None
    assert json.loads(raw)["request"]["body"]["messages"] == user(prompt)


def test_an_input_key_near_s3s_limit_gets_output_keys_s3_accepts(pipeline: Pipeline) -> None:
    # S3 keys are at most 1,024 bytes (moto does not check): results/<key>.summary.json would not fit
    key = "inputs/" + "n" * (1024 - len("inputs/") - len(".jsonl")) + ".jsonl"
    pipeline.put(key, jsonl(p("a")))
    pipeline.drain()
    assert pipeline.dlq() == []
    jobs = pipeline.ddb.scan(
        TableName=pipeline.stack.table,
        FilterExpression="sk = :job AND #k = :key",
        ExpressionAttributeNames={"#k": "key"},
        ExpressionAttributeValues={":job": {"S": "JOB"}, ":key": {"S": key}},
    )["Items"]
    (job,) = jobs
    outputs = {name: value["S"] for name, value in job["outputs"]["M"].items()}
    assert all(len(k.encode()) <= 1024 for k in outputs.values()), outputs
    summary = json.loads(pipeline.s3.get_object(Bucket=pipeline.bucket, Key=outputs["summary"])["Body"].read())
    assert (summary["status"], summary["input"]["key"]) == ("SUCCEEDED", key)


# -- an API that answers what no well-behaved API does ---------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HUGE_CODE = "c" * 250_000
NOT_SK_KEY = "proj-canary-9f8e7d6c5b4a39281706"  # a key that does not look like sk-…


@web.middleware
async def _hostile(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The fake API, except for prompts holding ``[[huge-code]]`` (a 400 whose error body is 1 MB: a
    250 KB ``code``) or ``[[echo-key]]`` (a 401 echoing the key sent, whole and in part)."""
    text = await request.text()
    if "[[huge-code]]" in text:
        error = {"message": "refused: " + "m" * 600_000, "type": "t" * 5_000, "code": HUGE_CODE, "param": None}
        return web.json_response({"error": error}, status=400)
    if "[[echo-key]]" in text:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key} (shown as {key[:8]}{'*' * 16}{key[-4:]})."
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key", "param": key}
        return web.json_response({"error": error}, status=401)
    return await handler(request)


@pytest.fixture
def hostile(pipeline: Pipeline) -> Iterator[Pipeline]:
    """``pipeline`` against the fake API behind :func:`_hostile` (its stats count what reached the fake)."""
    server = RunningFakeOpenAI(FakeOpenAIConfig(require_api_key=API_KEY))
    server.app.middlewares.append(_hostile)
    server.start()
    try:
        pipeline.configure(OPENAI_BASE_URL=server.base_url)
        runtime.shutdown()  # the SDK reads OPENAI_BASE_URL when the client is built
        yield dataclasses.replace(pipeline, server=server)
    finally:
        runtime.shutdown()
        server.stop()


def test_an_error_body_with_a_250_kb_code_is_stored_and_sent_bounded(hostile: Pipeline) -> None:
    # Given a line the API refuses with an error body of 1 MB (a 250 KB code, a 600 KB message)
    code = HUGE_CODE[: MAX_ERROR_CODE_CHARS - 1] + "…"
    case = Case(
        "inputs/huge-code.jsonl",
        jsonl(p("a", "refuse me [[huge-code]]"), p("b")),
        Ran("PARTIAL", ("b",), (Failed("a", code, "refused: mmm"),), api_calls=1),  # a: answered by the middleware
    )

    # When the file runs
    run(hostile, case)

    # Then the job ends, and every copy of the error is bounded: the dead letter, the item, the errors file
    dead = hostile.dlq()
    (letter,) = dead
    assert len(json.dumps(letter)) < 20_000
    assert len(letter["error"]["message"]) == MAX_ERROR_MESSAGE_CHARS
    item = hostile.items(hostile.summary(case.key)["job_id"])["REQ#a"]
    assert len(str(item["error"])) < 20_000
    check(hostile, case, dead)


def everything_written(pipe: Pipeline) -> str:
    texts = [
        pipe.s3.get_object(Bucket=pipe.bucket, Key=obj["Key"])["Body"].read().decode()
        for obj in pipe.s3.list_objects_v2(Bucket=pipe.bucket, Prefix="results/").get("Contents", [])
    ]
    texts += [json.dumps(item) for item in pipe.ddb.scan(TableName=pipe.stack.table)["Items"]]
    texts += [json.dumps(m) for m in pipe.dlq_peek()]
    return "\n".join(texts)


@pytest.mark.parametrize("echo", ["the fake's own 401 (part of the key)", "the whole key, and part of it"])
def test_a_key_not_shaped_sk_echoed_by_a_401_is_masked_everywhere(
    hostile: Pipeline, echo: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a configured key that does not look like sk-…, and an API whose 401 echoes it
    hostile.stack_secret(NOT_SK_KEY)
    marker = " [[echo-key]]" if echo.startswith("the whole") else ""
    key = "inputs/echo-key.jsonl"
    hostile.put(key, jsonl(*(p(f"k{i}", f"key {i}{marker}") for i in range(5))))

    # When the file runs and the API refuses the key
    hostile.drain()
    assert hostile.summary(key)["status"] == "FAILED"

    # Then the reason is kept, and no part of the key is in the outputs, the journal, the DLQ or the logs
    written = everything_written(hostile) + capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "Incorrect API key provided" in written
    for part in (NOT_SK_KEY, NOT_SK_KEY[:8], NOT_SK_KEY[-4:]):
        assert part not in written


def test_out_csv_cells_that_a_spreadsheet_reads_as_formulas_are_written_as_they_are(pipeline: Pipeline) -> None:
    # Given a .csv whose carried cells start with what a spreadsheet reads as a formula (README, Outputs)
    formulas = ["=1+1", "+47 22", "-5", "@SUM(A1)", "\t=2+2", "\r=3+3"]
    rows = "".join(f'r{i},hello,"{cell}"\r\n' for i, cell in enumerate(formulas))
    pipeline.put("inputs/formulas.csv", ("custom_id,prompt,note\r\n" + rows).encode())

    # When it runs
    pipeline.drain()

    # Then the .out.csv carries each cell unchanged: the README warns, the data is not altered
    text = pipeline.output("inputs/formulas.csv", ".out.csv").decode("utf-8-sig")
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[2] for row in table[1:]] == formulas
    assert [row[4] for row in table[1:]] == ["SUCCEEDED"] * len(formulas)


def test_a_file_naming_hundreds_of_models_joins_the_shared_limits_of_20(pipeline: Pipeline) -> None:
    # Given a file whose every line names its own model (each seat costs a renewal every few seconds)
    models = [f"gpt-4o-mini-variant-{i}" for i in range(300)]
    case = Case(
        "inputs/many-models.jsonl",
        jsonl(*(p(f"m{i}", model=model) for i, model in enumerate(models))),
        Ran("SUCCEEDED", tuple(f"m{i}" for i in range(len(models)))),
    )

    # When it runs
    run(pipeline, case)

    # Then every line is answered, and the run sat in the shared limits of 20 models, not 300
    check(pipeline, case)
    seats = pipeline.ddb.scan(
        TableName=pipeline.stack.table,
        FilterExpression="begins_with(pk, :budget)",
        ExpressionAttributeValues={":budget": {"S": "BUDGET#"}},
    )["Items"]
    assert len(seats) == 20
