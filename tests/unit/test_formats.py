"""Input files → requests: every format, and lines that fail alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from promptdrop.formats import FileRejected, LineError, Request, parse_stream, split_lines


async def chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def parse(
    suffix: str, data: bytes, key: str = "inputs/f", template: str | None = None
) -> list[Request | LineError]:
    stream = parse_stream(suffix, chunks(data), key=key + suffix, default_model="m-default", template=template)
    return [item async for item in stream]


def body(item: Request | LineError) -> dict[str, object]:
    assert isinstance(item, Request), item
    decoded: dict[str, object] = json.loads(item.body)
    return decoded


async def test_split_lines_handles_crlf_and_chunk_boundaries() -> None:
    lines = [line async for line in split_lines(chunks(b"a\r\nbb\n\nccc", size=2), start=10)]
    assert lines == [(10, b"a"), (13, b"bb"), (16, b""), (17, b"ccc")]


async def test_jsonl_can_start_mid_file_at_a_line_boundary() -> None:
    data = b'{"prompt": "one"}\n{"prompt": "two"}\n\n{"prompt": "four"}\n'
    start = data.index(b'{"prompt": "two"}')
    items = [
        item
        async for item in parse_stream(
            ".jsonl", chunks(data[start:]), key="k", default_model="m", start=start, first_line=2
        )
    ]
    assert [(i.line, i.custom_id, i.offset) for i in items] == [
        (2, "line-2", start),
        (4, "line-4", data.index(b'{"prompt": "four"}')),
    ]


async def test_jsonl_short_form_and_batch_api_lines() -> None:
    data = b"\n".join(
        [
            b'{"prompt": "hi", "temperature": 0.2}',
            b"",
            b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",'
            b' "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "yo"}]}}',
            b'{"messages": [{"role": "user", "content": "m"}], "system": "be brief", "model": "other", "custom_id": 7}',
        ]
    )
    first, second, third = await parse(".jsonl", data)
    assert isinstance(first, Request)
    assert (first.line, first.custom_id) == (1, "line-1")
    assert body(first) == {"temperature": 0.2, "messages": [{"role": "user", "content": "hi"}], "model": "m-default"}
    assert isinstance(second, Request)
    assert (second.line, second.custom_id, body(second)["model"]) == (3, "x", "gpt-4o")
    assert isinstance(third, Request)
    assert third.custom_id == "7"
    assert body(third)["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "m"},
    ]
    assert body(third)["model"] == "other"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"prompt": "a", "messages": []}', 'exactly one of "prompt" or "messages"'),
        (b'{"custom_id": "c", "url": "/v1/images/generations", "body": {}}', "url"),
        (b'{"custom_id": "c", "method": "GET", "url": "/v1/embeddings", "body": {}}', "POST"),
        (b'{"custom_id": "c", "url": "/v1/embeddings", "body": {}}', '"input"'),
        (b'{"prompt": "a", "stream": true}', "stream"),
        (b'{"messages": []}', "non-empty"),
        (b'{"prompt": "\xff"}', "UTF-8"),
    ],
)
async def test_a_bad_line_fails_alone_with_its_line_number(line: bytes, message: str) -> None:
    items = await parse(".jsonl", b'{"prompt": "ok"}\n' + line + b'\n{"prompt": "also ok"}\n')
    assert [type(i).__name__ for i in items] == ["Request", "LineError", "Request"]
    error = items[1]
    assert isinstance(error, LineError)
    assert error.line == 2
    assert message in error.message


async def test_a_json_syntax_error_reads_as_a_sentence() -> None:
    # Given a string never closed, on a .jsonl line and in a .json document
    (error,) = await parse(".jsonl", b'{"prompt": "abc\n')
    assert isinstance(error, LineError)
    with pytest.raises(FileRejected) as rejected:
        await parse(".json", b'[{"prompt": "ok"},\n {"prompt": "abc}]')
    # Then each names where it starts, once ("starting at column", not "starting at at column")
    assert error.message == 'not valid JSON: Unterminated string starting at column 12: {"prompt": "abc'
    assert rejected.value.message == "not valid JSON: Unterminated string starting at line 2 column 13"


async def test_txt_is_one_prompt_named_by_its_key() -> None:
    (item,) = await parse(".TXT", "Summarize: ünïcode".encode(), key="inputs/a b")
    assert isinstance(item, Request)
    assert item.custom_id == "inputs/a b.TXT"
    assert body(item)["messages"] == [{"role": "user", "content": "Summarize: ünïcode"}]


async def test_json_array_and_single_object() -> None:
    items = await parse(".json", b'[{"prompt": "a"}, {"prompt": "b", "custom_id": "B"}, 3]')
    assert [(i.line, i.custom_id) for i in items] == [(1, "item-1"), (2, "B"), (3, "item-3")]
    assert isinstance(items[2], LineError)
    (single,) = await parse(".json", b'{"prompt": "only"}')
    assert isinstance(single, Request)


async def test_csv_prompt_column_with_optional_fields() -> None:
    data = b'custom_id,prompt,model\nr1,"hello, world",\n,second,gpt-x\n,,\n'
    items = await parse(".csv", data)
    assert [(i.line, i.custom_id) for i in items] == [(2, "r1"), (3, "line-3")]
    assert body(items[1])["model"] == "gpt-x"


async def test_csv_prompt_template_from_the_job_header_fills_each_row() -> None:
    data = b'custom_id,lang,text,temperature\nr1,French,"good morning, all",0.2\nr2,German,,\n,,,\nr4,,,\n'
    items = await parse(".csv", data, template="Translate into {lang}: {text} {{verbatim}}")
    assert [(i.line, i.custom_id) for i in items] == [(2, "r1"), (3, "r2"), (5, "r4")]
    first = body(items[0])
    # the columns the template used are not sent as parameters; the others are
    assert first["messages"] == [{"role": "user", "content": "Translate into French: good morning, all {verbatim}"}]
    assert first["temperature"] == 0.2
    assert not {"lang", "text"} & first.keys()
    assert body(items[1])["messages"] == [{"role": "user", "content": "Translate into German:  {verbatim}"}]
    # the blank row (line 4) is skipped; a row with every template column empty fails alone
    assert isinstance(items[2], LineError)
    assert items[2].message == "the template's columns ['lang', 'text'] are all empty"


async def test_csv_parameter_cells_are_sent_as_json_values() -> None:
    header = b"custom_id,prompt,temperature,max_tokens,response_format,stop,seed\n"
    data = header + b'007,hi,0.2,5,"{""type"": ""json_object""}",END,\n'
    (item,) = await parse(".csv", data)
    assert item.custom_id == "007"
    sent = body(item)
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.2, 5, "END")
    assert sent["response_format"] == {"type": "json_object"}
    assert "seed" not in sent


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Say {word!r}", "{word!r} takes a column name alone"),
        ("Say {word:>9}", "{word:>9} takes a column name alone"),
        ("Say {wrod}", "{wrod} names no column of the .csv (['word'])"),
        ("Say {word.upper}", "{word.upper} names no column"),
        ("Say hello", "uses no column"),
        ("Say {word", "not valid"),
    ],
)
async def test_a_bad_csv_template_fails_the_file_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(FileRejected) as info:
        await parse(".csv", b"word\nhi\n", template=template)
    assert info.value.code == "invalid_template"
    assert message in info.value.message


@pytest.mark.parametrize(
    ("suffix", "data", "code"),
    [
        (".pdf", b"x", "unsupported_format"),
        (".jsonl", b"\n\n  \n", "empty"),
        (".txt", b"", "empty"),
        (".txt", b"\xff\xfe", "undecodable"),
        (".json", b"[1,", "invalid_json"),
        (".csv", b"question\nwhy\n", "invalid_csv"),
    ],
)
async def test_whole_file_problems_reject_the_file(suffix: str, data: bytes, code: str) -> None:
    with pytest.raises(FileRejected) as info:
        await parse(suffix, data)
    assert info.value.code == code


async def test_cost_estimate_counts_prompt_and_completion_budget() -> None:
    (item,) = await parse(".jsonl", json.dumps({"prompt": "x" * 400, "max_tokens": 100}).encode())
    assert isinstance(item, Request)
    assert 100 + 100 <= item.cost <= 100 + 140
