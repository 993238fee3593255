""".csv hardening: which columns are sent and which carried, rows that fail alone, files that fail whole."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from promptdrop.formats import FileRejected, LineError, Request, parse_stream


async def chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def parse(data: bytes, template: str | None = None) -> list[Request | LineError]:
    stream = parse_stream(".csv", chunks(data), key="inputs/f.csv", default_model="m", template=template)
    return [item async for item in stream]


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"prompt\n", "empty", "a header but no rows"),
        (b"prompt\n,\n\n", "empty", "a header but no rows"),
        (b"prompt,custom_id,prompt\na,b,c\n", "invalid_csv", "the header names 'prompt' more than once"),
        (b" prompt ,prompt\na,b\n", "invalid_csv", "the header names 'prompt' more than once"),
        (b'prompt\n"hello\nworld\n', "invalid_csv", "row 2 (read up to line 3): unexpected end of data"),
        (b'prompt\nok\n"a"b\n', "invalid_csv", "row 3"),
    ],
)
async def test_a_csv_with_nothing_usable_fails_whole_before_anything_is_sent(
    data: bytes, code: str, message: str
) -> None:
    with pytest.raises(FileRejected) as info:
        await parse(data)
    assert (info.value.code, message in info.value.message) == (code, True), info.value.message


async def test_csv_sends_request_columns_only_and_carries_the_whole_row() -> None:
    data = (
        b"custom_id,prompt,region,temperature,notes,messages,model,empty_param\nr1,hi,EU,0.2,call back,ignored,gpt-x,\n"
    )
    (item,) = await parse(data)
    assert isinstance(item, Request)
    sent = {"temperature": 0.2, "model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    assert json.loads(item.body) == sent
    # the whole row rides along, for the .out.csv: every column in file order, sent or not
    assert item.columns == (
        ("custom_id", "r1"),
        ("prompt", "hi"),
        ("region", "EU"),
        ("temperature", "0.2"),
        ("notes", "call back"),
        ("messages", "ignored"),
        ("model", "gpt-x"),
        ("empty_param", ""),
    )


async def test_csv_with_a_template_carries_a_prompt_column_it_does_not_use() -> None:
    (item,) = await parse(b"city,prompt,seed\nOslo,unused,7\n", template="Visit {city}")
    assert isinstance(item, Request)
    assert json.loads(item.body) == {"seed": 7, "messages": [{"role": "user", "content": "Visit Oslo"}], "model": "m"}
    assert item.columns == (("city", "Oslo"), ("prompt", "unused"), ("seed", "7"))


@pytest.mark.parametrize(
    ("row", "message", "custom_id"),
    [
        (b"hello, world,c1", "the row has 3 cells but the header 2 columns", "line-2"),
        (b"hi," + b"x" * 600, "custom_id is 600 bytes", "line-2"),
        (b"hi,a\x01b", "custom_id holds U+0001", "line-2"),
        (b"  ,c1", "empty prompt", "c1"),
    ],
)
async def test_a_bad_csv_row_fails_alone(row: bytes, message: str, custom_id: str) -> None:
    items = await parse(b"prompt,custom_id\n" + row + b"\nok,c2\n")
    assert [type(i).__name__ for i in items] == ["LineError", "Request"]
    error = items[0]
    assert isinstance(error, LineError)
    assert (error.line, error.custom_id) == (2, custom_id)
    assert message in error.message
    # a failing row keeps its cells (one per header column) for the .out.csv
    assert [name for name, _ in error.columns] == ["prompt", "custom_id"]


async def test_csv_cells_past_pythons_default_field_limit_are_read() -> None:
    (item,) = await parse(b'prompt\n"' + b"x" * 200_000 + b'"\n')
    assert isinstance(item, Request)


async def test_csv_parameter_cells_that_are_not_standard_json_are_sent_as_text() -> None:
    (item,) = await parse(b"prompt,temperature,stop\nhi,NaN,1e400\n")
    assert isinstance(item, Request)
    assert json.loads(item.body)["temperature"] == "NaN"  # the API answers a wrong type with a 400
    assert json.loads(item.body)["stop"] == "1e400"


async def test_csv_with_nul_bytes_and_crlf() -> None:
    items = await parse(b"prompt,custom_id\r\nhi\x00there,a\r\n\r\nok,b\r\n")
    assert [(i.line, i.custom_id, type(i).__name__) for i in items] == [(2, "a", "Request"), (3, "b", "Request")]


async def test_a_template_prompt_past_the_request_limit_fails_its_row_before_it_is_built() -> None:
    # Given a template naming one column 600 times, and a row whose cell is 800 KB (480 MB of prompt)
    tracemalloc.start()
    try:
        big, small = await parse(b"c\n" + b"y" * 800_000 + b"\nOslo\n", template="{c}" * 600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then that row fails alone, the next runs, and the prompt was never built (a few MB, not 480)
    assert isinstance(big, LineError)
    assert "the template builds a prompt of 480,000,000 characters" in big.message
    assert isinstance(small, Request)
    assert peak < 50_000_000
