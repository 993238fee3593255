"""CSV in, CSV out: a .csv of data rows keeps its columns — never sent, all of them in the .out.csv."""

from __future__ import annotations

import csv
import io
import json

from promptdrop.cli import redrive

from tests.integration.conftest import Pipeline

TEMPLATE = "Name one museum in {city}."


def table(p: Pipeline, key: str) -> list[list[str]]:
    """The .out.csv as a spreadsheet reads it (BOM first, then the rows)."""
    data = p.output(key, ".out.csv")
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with a byte-order mark, for Excel"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def put_csv(p: Pipeline, key: str, text: str, **metadata: str) -> None:
    p.s3.put_object(Bucket=p.bucket, Key=key, Body=text.encode(), Metadata=metadata)


def test_a_csv_of_data_rows_comes_back_with_every_column_and_its_answer_in_input_order(pipeline: Pipeline) -> None:
    # Given a .csv of data rows (a template in its job header): extra columns, a row the API
    # refuses, a row whose cells are shifted by an unquoted comma, a row with an empty template column
    p = pipeline
    key = "inputs/museums.csv"
    rows = (
        "city,country,notes,temperature\n"
        'Oslo,Norway,"call back, later",0.2\n'
        "Lyon [[fail:400]],France,,\n"
        "Kyōto,Japan,naïve café,\n"
        "Paris,France,too,many,cells\n"
        ",Nowhere,empty city,\n"
    )
    put_csv(p, key, rows, **{"promptdrop-template": TEMPLATE})

    # When it runs
    p.drain()

    # Then only the prompt and the parameter columns were sent: the refused row's dead letter
    # carries the request exactly as sent, and no carried column reached the API
    letters = {m["custom_id"]: m for m in p.dlq() if m["kind"] == "prompt_failure"}
    sent = letters["line-3"]["request"]["body"]
    assert sent == {
        "messages": [{"role": "user", "content": "Name one museum in Lyon [[fail:400]]."}],
        "model": "gpt-4o-mini",
    }
    assert p.times_seen("Name one museum in Oslo.") == 1
    # (the fake API refuses an unknown parameter with a 400, as the real one does: Oslo was answered)

    # And the .out.csv holds every input column in input order, then the answer, status and error,
    # a row per input row in input order — the failures too, with their cells
    header, *lines = table(p, key)
    assert header == ["city", "country", "notes", "temperature", "answer", "status", "error"]
    assert lines[0] == ["Oslo", "Norway", "call back, later", "0.2", "Echo: Name one museum in Oslo.", "SUCCEEDED", ""]
    assert lines[1][:4] == ["Lyon [[fail:400]]", "France", "", ""]
    assert lines[1][4:6] == ["", "FAILED"]
    assert lines[1][6].startswith("http_400: ")
    assert lines[2][:6] == ["Kyōto", "Japan", "naïve café", "", "Echo: Name one museum in Kyōto.", "SUCCEEDED"]
    assert lines[3][:4] == ["Paris", "France", "too", "many"]  # the header's width: the shifted cells as read
    assert lines[3][5:] == [
        "FAILED",
        "invalid_line: the row has 5 cells but the header 4 columns: quote a cell that holds a comma",
    ]
    assert lines[4][:3] == ["", "Nowhere", "empty city"]
    assert lines[4][5] == "FAILED"
    assert "are all empty" in lines[4][6]
    assert len(lines) == 5

    # And the job lists it among its outputs
    summary = p.summary(key)
    assert summary["outputs"]["csv"] == f"s3://{p.bucket}/results/{key}.out.csv"
    assert p.items(summary["job_id"])["JOB"]["outputs"]["csv"] == f"results/{key}.out.csv"


def test_a_prompt_column_csv_and_a_header_name_taken_by_the_input(pipeline: Pipeline) -> None:
    # Given a plain prompt-column .csv that has a column named "status" of its own
    p = pipeline
    key = "inputs/tickets.csv"
    put_csv(p, key, "custom_id,prompt,status\nt1,first,open\nt2,second,closed\n")

    p.drain()

    # Then promptdrop's own status column steps aside with a leading underscore
    header, *lines = table(p, key)
    assert header == ["custom_id", "prompt", "status", "answer", "_status", "error"]
    assert lines == [
        ["t1", "first", "open", "Echo: first", "SUCCEEDED", ""],
        ["t2", "second", "closed", "Echo: second", "SUCCEEDED", ""],
    ]


def test_a_json_schema_request_gets_one_column_per_top_level_property(pipeline: Pipeline) -> None:
    # Given rows asking for an answer following a JSON schema
    p = pipeline
    key = "inputs/structured.csv"
    schema = {
        "type": "object",
        "properties": {"museum": {"type": "string"}, "founded": {"type": "integer"}, "free": {"type": "boolean"}},
        "required": ["museum", "founded", "free"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "museum", "schema": schema, "strict": True}}
    cell = json.dumps(fmt).replace('"', '""')
    put_csv(p, key, f'city,response_format\nOslo,"{cell}"\nLyon,"{cell}"\n', **{"promptdrop-template": TEMPLATE})

    p.drain()

    # Then each property has its column, filled from the parsed answer
    header, *lines = table(p, key)
    assert header == [
        "city",
        "response_format",
        "answer",
        "status",
        "error",
        "answer.museum",
        "answer.founded",
        "answer.free",
    ]
    for line in lines:
        answer = json.loads(line[2])
        assert line[3] == "SUCCEEDED"
        assert line[5] == answer["museum"]
        assert line[6] == json.dumps(answer["founded"])
        assert line[7] == json.dumps(answer["free"])
    assert [line[0] for line in lines] == ["Oslo", "Lyon"]


def test_a_redriven_row_keeps_its_columns(pipeline: Pipeline) -> None:
    # Given a .csv row that fails its only attempt
    p = pipeline
    p.configure(PROMPTDROP_MAX_ATTEMPTS="1")
    key = "inputs/flaky.csv"
    put_csv(p, key, "prompt,region\nsteady,EU\nflaky [[fail:500x1]],US\n")
    p.drain()
    assert table(p, key)[2][2:4] == ["", "FAILED"]

    # When its dead letter (which carries the request only) is redriven
    assert redrive(p.sqs, dlq_url=p.stack.dlq_url, work_queue_url=p.stack.work_queue_url) == {"prompt_failure": 1}
    p.drain()

    # Then its answer's row still has the cells of its input row
    header, *lines = table(p, key)
    assert header == ["prompt", "region", "answer", "status", "error"]
    assert lines[1] == ["flaky [[fail:500x1]]", "US", "Echo: flaky [[fail:500x1]]", "SUCCEEDED", ""]
    assert p.summary(key)["status"] == "SUCCEEDED"
