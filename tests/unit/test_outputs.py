"""The ordered spool: lines in input order, whatever order the journal gave them in."""

from __future__ import annotations

import json

import pytest
from promptdrop import jsonsafe
from promptdrop.outputs import OrderedSpool, line_of, output_line
from promptdrop.records import RequestRecord, RequestStatus


def test_lines_come_back_in_input_order_with_gaps_for_blank_lines() -> None:
    spool = OrderedSpool()
    for line in (7, 2, 9, 1, 4):  # key order, not input order; 3, 5, 6, 8 were blank or elsewhere
        spool.add(line, f"line {line}\n".encode())
    assert b"".join(spool.sorted_lines()) == b"line 1\nline 2\nline 4\nline 7\nline 9\n"
    spool.close()


def test_a_second_item_for_one_line_is_kept_not_dropped() -> None:
    spool = OrderedSpool()
    for line, text in ((3, b"c\n"), (1, b"a\n"), (3, b"c again\n")):
        spool.add(line, text)
    assert list(spool.sorted_lines()) == [b"a\n", b"c\n", b"c again\n"]
    spool.close()


def test_an_empty_spool_writes_nothing() -> None:
    spool = OrderedSpool()
    assert list(spool.sorted_lines()) == []
    spool.close()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": "plain ascii"}, '{"a":"plain ascii"}'),
        ({"a": "héllo 😀"}, '{"a":"héllo 😀"}'),  # readable, not escaped
        ({"a": "x\ud800y"}, '{"a":"x\\ud800y"}'),  # a lone surrogate: no UTF-8 encoder takes it
        ({"a": "\ufffe\uffff"}, '{"a":"\\ufffe\\uffff"}'),  # SQS refuses these
    ],
)
def test_jsonsafe_escapes_only_what_a_store_refuses(value: dict[str, str], text: str) -> None:
    assert jsonsafe.dumps(value) == text
    assert json.loads(text) == value
    text.encode("utf-8")  # every store downstream takes it


@pytest.mark.parametrize("line", [1, 42, 1_000_000])
def test_an_output_lines_input_line_is_read_back_from_its_id(line: int) -> None:
    record = RequestRecord("id_with_underscores_9", line, RequestStatus.SUCCEEDED, 1)
    written = json.loads(output_line("0123456789abcdef", record, '{"object": "chat.completion"}'))
    assert line_of(written["id"]) == line
    assert line_of("not-ours") is None
    assert line_of(None) is None
