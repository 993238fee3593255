"""Input hardening: a pathology fails one line (or, when nothing in the file is usable, the file), never the run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from promptdrop.formats import (
    MAX_CUSTOM_ID_BYTES,
    MAX_NESTING,
    MAX_REQUEST_BYTES,
    FileRejected,
    LineError,
    Request,
    chat_parameters,
    custom_id_of,
    parse_stream,
    split_lines,
)


async def chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def parse(suffix: str, data: bytes, *, size: int = 7, key: str = "inputs/f") -> list[Request | LineError]:
    stream = parse_stream(suffix, chunks(data, size), key=key + suffix, default_model="m")
    return [item async for item in stream]


def line(obj: object) -> bytes:
    return json.dumps(obj).encode()


async def one_bad_line(bad: bytes) -> LineError:
    """``bad`` between two good lines: it fails alone, the others are requests."""
    items = await parse(".jsonl", b'{"prompt": "before"}\n' + bad + b'\n{"prompt": "after"}\n', size=4096)
    assert [type(i).__name__ for i in items] == ["Request", "LineError", "Request"], items
    error = items[1]
    assert isinstance(error, LineError)
    assert error.line == 2
    return error


@pytest.mark.parametrize(
    ("bad", "custom_id", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "line-2", f"nest deeper than {MAX_NESTING} levels"),
        (b'{"prompt": "' + b"[" * 500 + b'"}', None, None),  # brackets inside a string do not nest
        (b'{"custom_id": "s", "prompt": "a\\ud800b"}', "s", "lone surrogate (\\ud800)"),
        (b'{"prompt": "x", "temperature": NaN}', "line-2", "NaN is not valid JSON"),
        (b'{"prompt": "x", "temperature": Infinity}', "line-2", "Infinity is not valid JSON"),
        (b'{"prompt": "x", "temperature": -Infinity}', "line-2", "-Infinity is not valid JSON"),
        (b'{"prompt": "x", "temperature": 1e400}', "line-2", "1e400 is too large for a 64-bit float"),
        (b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", "line-2", "an integer of 5,000 digits"),
        (b'{"prompt": "x", "max_tokens": 1' + b"0" * 400 + b"}", "line-2", "outside the signed 64-bit range"),
        (b'{"prompt": "x", "seed": -9223372036854775809}', "line-2", "the integer -9223372036854775809 is outside"),
        (b'{"prompt": "a", "prompt": "b"}', "line-2", 'the key "prompt" appears twice'),
        (b'{"prompt": "a", "metadata": {"k": 1, "k": 2}}', "line-2", 'the key "k" appears twice'),
        (b'{"prompt": "x\x01y"}', "line-2", "Invalid control character"),
        (b'{"prompt": ""}', "line-2", "prompt: is empty"),
        (b'{"prompt": 5}', "line-2", "prompt: Input should be a valid string"),
        (b'{"messages": ["hi"]}', "line-2", "messages.0: Input should be a valid dictionary"),
        (b'{"custom_id": "b", "url": "/v1/chat/completions", "body": "text"}', "b", "body: Input should be"),
        (b'{"custom_id": "b", "url": "/v1/chat/completions", "body": {"messages": "hi"}}', "b", "non-empty"),
        (b'"just a string"', "line-2", "expected a JSON object, got a string"),
    ],
)
async def test_a_pathological_jsonl_line_fails_alone(bad: bytes, custom_id: str | None, message: str | None) -> None:
    if message is None:
        items = await parse(".jsonl", bad, size=4096)
        assert [type(i).__name__ for i in items] == ["Request"]
        return
    error = await one_bad_line(bad)
    assert error.custom_id == custom_id
    assert message in error.message


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (True, "custom_id must be a string (or an integer), got a boolean"),
        (1.5, "got a number"),
        (1.0, "got a number"),
        ([1], "got an array"),
        ({"a": 1}, "got an object"),
        ("", "custom_id is empty"),
        ("é" * 257, f"custom_id is 514 bytes in UTF-8; the limit is {MAX_CUSTOM_ID_BYTES} bytes"),
        ("x" * 2000, "custom_id is 2,000 bytes"),
        ("a\x00b", "custom_id holds U+0000 at character 2"),
        ("tab\there", "U+0009"),
        ("\x7f", "U+007F"),
        ("\ufffe", "U+FFFE"),
        ("ok\uffff", "U+FFFF at character 3"),
    ],
)
async def test_an_unusable_custom_id_fails_its_line_under_the_default_id(given: object, message: str) -> None:
    error = await one_bad_line(line({"custom_id": given, "prompt": "hi"}))
    assert error.custom_id == "line-2"
    assert message in error.message


async def test_custom_ids_at_the_limit_and_beyond_ascii_are_kept() -> None:
    ok = ["x" * MAX_CUSTOM_ID_BYTES, "é" * (MAX_CUSTOM_ID_BYTES // 2), "日本語-🙂", "dup#line-2", " spaced ", 7]
    items = await parse(".jsonl", b"\n".join(line({"custom_id": c, "prompt": "hi"}) for c in ok), size=4096)
    assert [i.custom_id for i in items] == [str(c) for c in ok]
    assert all(isinstance(i, Request) for i in items)


async def test_an_error_message_never_carries_characters_sqs_refuses() -> None:
    # a broken line quoting raw U+FFFF and a NUL escape: the message escapes them
    error = await one_bad_line('{"prompt": "\uffff\\u0000 broken'.encode())
    assert "\uffff" not in error.message
    assert "\\uffff" in error.message


async def test_a_line_over_the_limit_is_never_held_whole_and_fails_alone() -> None:
    big = b'{"prompt": "' + b"x" * (MAX_REQUEST_BYTES + 10) + b'"}'
    lines = [(o, len(raw)) async for o, raw in split_lines(chunks(b"a\n" + big + b"\r\nb", 65536))]
    assert lines == [(0, 1), (2, MAX_REQUEST_BYTES + 1), (2 + len(big) + 2, 1)]  # true offsets, head kept
    error = await one_bad_line(big)
    assert "longer than 1,048,576 bytes (1 MiB)" in error.message


async def test_a_line_just_under_the_limit_is_a_request() -> None:
    prompt = "x" * (MAX_REQUEST_BYTES - 200)
    (item,) = await parse(".jsonl", line({"prompt": prompt}) + b"\r\n", size=65536)
    assert isinstance(item, Request)


async def test_a_request_whose_body_grows_past_the_limit_fails() -> None:
    # a .json item is not cut by split_lines: the body limit still holds
    (error,) = await parse(".json", line({"prompt": "x" * (MAX_REQUEST_BYTES + 1)}), size=65536)
    assert isinstance(error, LineError)
    assert "the request is 1,048,6" in error.message


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
async def test_split_lines_keeps_true_offsets_across_chunk_sizes(size: int) -> None:
    data = b"ab\r\n\ncdefgh\nij"
    got = [item async for item in split_lines(chunks(data, size), max_bytes=3)]
    assert got == [(0, b"ab"), (4, b""), (5, b"cdef"), (12, b"ij")]


async def test_a_utf8_bom_starts_line_one_of_a_jsonl() -> None:
    items = await parse(".jsonl", b'\xef\xbb\xbf{"prompt": "one"}\r\n{"prompt": "two"}', size=2)
    assert [i.custom_id for i in items if isinstance(i, Request)] == ["line-1", "line-2"]
    assert custom_id_of(b'\xef\xbb\xbf{"custom_id": "c"}', 1) == "c"


@pytest.mark.parametrize(
    ("suffix", "data", "code", "message"),
    [
        (".jsonl", b"\xef\xbb\xbf", "empty", "no requests"),
        (".jsonl", b"\xef\xbb\xbf\r\n\r\n", "empty", "no requests"),
        (".jsonl", '{"prompt": "hi"}\n'.encode("utf-16"), "undecodable", "UTF-16"),
        (".csv", "prompt\nhi\n".encode("utf-16"), "undecodable", "save it as UTF-8"),
        (".txt", b"\xef\xbb\xbf", "empty", "no requests"),
        (".txt", b"  \n\t\r\n ", "empty", "no requests"),
        (".txt", b"x" * (MAX_REQUEST_BYTES + 1), "too_large", "a .txt is one prompt"),
        (".json", b"[" * 102 + b"]" * 102, "too_deep", f"deeper than {MAX_NESTING} levels"),
        (".json", b'{"prompt": ' + b"[" * 100 + b"]" * 100 + b"}", "too_deep", "line 1"),
        (".json", b'[{"prompt": "a"},]', "invalid_json", "Expecting value at line 1 column 18"),
        (".json", b'[{"prompt": "a"}\n {"prompt": "b"}]', "invalid_json", "Expecting ',' delimiter at line 2"),
        (".json", b'{"prompt": "a"} {"prompt": "b"}', "invalid_json", "Extra data"),
        (".json", b"[]", "empty", "holds no requests"),
    ],
)
async def test_a_file_with_nothing_usable_fails_whole(suffix: str, data: bytes, code: str, message: str) -> None:
    with pytest.raises(FileRejected) as info:
        await parse(suffix, data, size=65536)
    assert (info.value.code, message in info.value.message) == (code, True), info.value.message


async def test_a_json_document_fails_item_by_item_where_it_can() -> None:
    data = b'[{"prompt": "a"}, {"prompt": NaN}, {"prompt": "c", "prompt": "d"}, 7, {"prompt": 1e999}, {"prompt": "f"}]'
    items = await parse(".json", data, size=65536)
    assert [(i.line, type(i).__name__) for i in items] == [
        (1, "Request"),
        (2, "LineError"),
        (3, "LineError"),
        (4, "LineError"),
        (5, "LineError"),
        (6, "Request"),
    ]
    messages = [i.message for i in items if isinstance(i, LineError)]
    assert ["NaN" in messages[0], "appears twice" in messages[1], "got an integer" in messages[2]] == [True] * 3
    assert "too large for a 64-bit float" in messages[3]


async def test_unknown_short_form_keys_fail_the_line_naming_the_key_and_the_accepted_ones() -> None:
    error = await one_bad_line(line({"prompt": "hi", "metadata_x": 1, "foo": 2}))
    assert error.message.startswith('unknown parameters "metadata_x", "foo": not sent')
    assert "custom_id, prompt, messages, system, model, endpoint and the parameters" in error.message
    assert "temperature" in error.message
    # every SDK parameter is accepted, metadata included
    (item,) = await parse(".jsonl", line({"prompt": "hi", "metadata": {"k": "v"}, "store": True}), size=4096)
    assert isinstance(item, Request)


def test_chat_parameters_come_from_the_installed_sdk() -> None:
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    params = chat_parameters()
    assert set(CompletionCreateParamsBase.__annotations__) | {"stream"} == params
    assert {"temperature", "max_tokens", "response_format", "messages", "model"} <= params
    assert chat_parameters() is params  # computed once


async def test_a_batch_line_body_is_sent_as_given() -> None:
    # the API is the authority on a Batch API body: it answers an unknown parameter with a 400
    obj = {"custom_id": "b", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "x"}]}}
    obj["body"]["foo"] = 1  # type: ignore[index]
    (item,) = await parse(".jsonl", line(obj), size=4096)
    assert isinstance(item, Request)
    assert json.loads(item.body)["foo"] == 1


async def test_a_txt_named_by_a_key_that_cannot_be_an_id_is_line_1() -> None:
    long_key = "inputs/" + "k" * 600
    (item,) = await parse(".txt", b"hello", key=long_key)
    assert item.custom_id == "line-1"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"custom_id": "x" , "prompt": "p"}',
        b'{"custom_id": ' + b"1" * 600 + b', "prompt": "p"}',
        b'{"custom_id": true, "prompt": "p"}',
        b'{"custom_id": "a\\ud800", "prompt": "p"}',
        b'{"custom_id": "c", "prompt": NaN}',
        b'{"custom_id": "c", "custom_id": "d", "prompt": "p"}',
        b"[" * 1000 + b"]" * 1000,
        b"\xff",
        b'{"custom_id": "c", "prompt": "' + b"x" * (MAX_REQUEST_BYTES + 1) + b'"}',
    ],
)
async def test_custom_id_of_agrees_with_the_parser(raw: bytes) -> None:
    # the shard planner finds repeated ids with custom_id_of: it must name a line as the parser does
    (item,) = await parse(".jsonl", raw, size=65536)
    assert custom_id_of(raw, 1) == item.custom_id
