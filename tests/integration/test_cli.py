"""The CLI as a user drives it, against the local stack: submit, status, results, cancel, redrive.

Commands run in-process through ``main([...])`` (stdout is not a terminal here: the plain and
JSON views); the function runs through the real handler, drained from the work queue as Lambda's
event source would, in the foreground (``drain``) or a background thread (``event_source``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from promptdrop.adapters.s3 import ObjectInfo
from promptdrop.cli import main
from promptdrop.handler import lambda_handler
from promptdrop.jobs import make_job_id

from infra.event_source import SqsEventSource
from tests.integration.conftest import Pipeline

MIXED = [
    json.dumps({"custom_id": "a", "prompt": "first question"}),
    "{broken",
    json.dumps({"custom_id": "c", "prompt": "rejected [[fail:400]]"}),
    json.dumps({"custom_id": "d", "prompt": "second question"}),
]


_HANDLER_LINES = ('{"level":', '{"_aws":')


class Cli:
    """``promptdrop ...`` in this process: exit status, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main(list(argv))
        out, err = self._capsys.readouterr()
        # The handler, when it runs in this process (event_source), logs JSON lines to stdout too.
        out = "".join(line for line in out.splitlines(keepends=True) if not line.startswith(_HANDLER_LINES))
        return code, out, err

    def json(self, *argv: str) -> tuple[int, Any]:
        code, out, err = self(*argv, "--json")
        assert out, err
        return code, json.loads(out)


@pytest.fixture
def cli(pipeline: Pipeline, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    # The function's environment is set by `pipeline`; the CLI's input bucket comes from PROMPTDROP_BUCKET.
    monkeypatch.setenv("PROMPTDROP_BUCKET", pipeline.bucket)
    return Cli(capsys)


@pytest.fixture
def slow_cli(slow_pipeline: Pipeline, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("PROMPTDROP_BUCKET", slow_pipeline.bucket)
    return Cli(capsys)


def peek_dlq(p: Pipeline) -> list[dict[str, Any]]:
    """The dead letters, left in the queue."""
    got = p.sqs.receive_message(QueueUrl=p.stack.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


@contextmanager
def event_source(p: Pipeline) -> Iterator[None]:
    """Lambda's SQS event source, polling the work queue in a background thread until the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        with SqsEventSource.for_stack(p.stack) as source:
            while not stop.is_set():
                try:
                    source.poll_once(lambda_handler, wait_s=1)
                except BaseException as exc:  # surfaced in the test's thread
                    errors.append(exc)
                    return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def write_file(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# -- submit, status, results ------------------------------------------------------------------------


def test_submit_then_status_and_results_show_the_job_exactly(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    # Given a file submitted (uploaded under the input prefix) and run by the function
    code, submitted = cli.json("submit", str(write_file(tmp_path, "mixed.jsonl", MIXED)))
    assert code == 0
    assert (submitted["bucket"], submitted["key"]) == (p.bucket, "inputs/mixed.jsonl")
    p.drain()
    key = "inputs/mixed.jsonl"
    job_id = p.summary(key)["job_id"]
    assert submitted["job_id"] == job_id  # the CLI computes the function's job id

    # When its status is asked by key, by key without the prefix, and by job id
    code, by_key = cli.json("status", key)
    assert code == 0
    assert cli.json("status", "mixed.jsonl")[1]["job_id"] == job_id
    assert cli.json("status", job_id)[1]["job_id"] == job_id

    # Then it shows the final counts, and the failures by code (from the errors file)
    assert (by_key["status"], by_key["total"], by_key["succeeded"], by_key["failed"]) == ("PARTIAL", 4, 2, 2)
    assert by_key["derived"]["failures_by_code"] == {"invalid_line": 1, "http_400": 1}
    assert by_key["derived"]["done"] == 4
    code, text, _ = cli("status", key)
    assert code == 0
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["status"] == "PARTIAL"
    assert lines["requests"] == "4 done: 2 succeeded, 2 failed"
    assert lines["failures"] in ("invalid_line 1, http_400 1", "http_400 1, invalid_line 1")
    assert lines["results"] == f"s3://{p.bucket}/results/{key}.out.jsonl"

    # and results prints the answers, then the failures, exactly as stored
    code, out, _ = cli("results", key)
    assert code == 0
    assert out.encode() == p.output(key, ".out.jsonl")
    assert [json.loads(line)["custom_id"] for line in out.splitlines()] == ["a", "d"]
    code, out, _ = cli("results", key, "--errors")
    assert out.encode() == p.output(key, ".errors.jsonl")
    assert [json.loads(line)["custom_id"] for line in out.splitlines()] == ["line-2", "c"]

    # and --out downloads every output file
    code, downloaded = cli.json("results", job_id, "--out", str(tmp_path / "out"))
    assert code == 0
    assert sorted(downloaded["files"]) == ["errors", "results", "summary"]
    for suffix in (".out.jsonl", ".errors.jsonl", ".summary.json"):
        assert (tmp_path / "out" / f"mixed.jsonl{suffix}").read_bytes() == p.output(key, suffix)


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


EVERY_ENDPOINT = [
    json.dumps({"custom_id": "chat", "prompt": "hello chat"}),
    json.dumps({"custom_id": "resp", "endpoint": "/v1/responses", "prompt": "hello responses"}),
    json.dumps({"custom_id": "cmpl", "endpoint": "/v1/completions", "prompt": "once upon"}),
    json.dumps({"custom_id": "mod", "endpoint": "/v1/moderations", "prompt": "is this fine"}),
    json.dumps({"custom_id": "mod-hit", "endpoint": "/v1/moderations", "prompt": "hit [[output:content_filter]]"}),
    batch_line("emb", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["one", "two"]}),
    json.dumps({"custom_id": "emb-8", "endpoint": "/v1/embeddings", "prompt": "small", "dimensions": 8}),
    "{broken",
    json.dumps({"custom_id": "refused", "prompt": "no [[fail:400]]"}),
    batch_line("multi-line", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "two\nlines"}]}),
]  # fmt: skip


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """The plain table the CLI prints (after its title): its header, and each row's cells."""
    _title, header, *rows = text.splitlines()
    starts = [header.index(name) for name in header.split()]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    # a right-aligned first column ("line") ends where the header's name ends
    first_end = len(header.split()[0])
    cells = [[row[:first_end].strip()] + [row[a:b].strip() for a, b in bounds[1:]] for row in rows]
    return header.split(), cells


def test_results_shows_each_endpoints_answer_and_each_failures_line(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given a file mixing all five endpoints (and two lines that fail), run by the function
    code, submitted = cli.json("submit", str(write_file(tmp_path, "every.jsonl", EVERY_ENDPOINT)))
    assert code == 0
    pipeline.drain()

    # When its results are printed as a table
    code, out, _ = cli("results", submitted["key"], "--as-table")

    # Then each answer is shown as its endpoint gives it, beside its input line
    assert code == 0
    assert out.splitlines()[0] == f"s3://{pipeline.bucket}/{submitted['key']}: 8 answer(s)"
    header, rows = table(out)
    assert header == ["line", "custom_id", "answer"]
    assert rows == [
        ["1", "chat", "Echo: hello chat"],
        ["2", "resp", "Echo: hello responses"],
        ["3", "cmpl", "Echo: once upon"],
        ["4", "mod", "not flagged"],
        ["5", "mod-hit", "flagged: violence"],
        ["6", "emb", "2 embeddings × 1536 dims"],  # noqa: RUF001
        ["7", "emb-8", "embedding: 8 dims"],
        ["10", "multi-line", "Echo: two lines"],  # a cell is one line
    ]

    # and the failures with their line, code and reason
    code, out, _ = cli("results", submitted["key"], "--errors", "--as-table")
    header, rows = table(out)
    assert header == ["line", "custom_id", "code", "reason"]
    assert [row[:3] for row in rows] == [["8", "line-8", "invalid_line"], ["9", "refused", "http_400"]]
    assert rows[0][3].startswith("not valid JSON")
    assert "Injected bad request" in rows[1][3]

    # and without --as-table (not a terminal) the lines as stored
    assert cli("results", submitted["key"])[1].encode() == pipeline.output(submitted["key"], ".out.jsonl")


def test_submit_wait_follows_the_job_to_its_end(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    # Given the function running (the event source polls in the background)
    path = write_file(tmp_path, "questions.jsonl", [json.dumps({"prompt": f"question {i}"}) for i in range(30)])
    with event_source(pipeline):
        # When a file is submitted with --wait
        code, out, err = cli("submit", str(path), "--wait", "--timeout", "90", "--interval", "0.2")

    # Then it returns once the job ended, every request succeeded, and prints the summary
    assert code == 0, err
    title, *rows = out.splitlines()
    assert title == "job finished"
    fields = dict(row.split(None, 1) for row in rows)
    assert fields["status"] == "SUCCEEDED"
    assert fields["requests"] == "30 done: 30 succeeded, 0 failed"
    assert fields["summary"] == f"s3://{pipeline.bucket}/results/inputs/questions.jsonl.summary.json"
    assert pipeline.summary("inputs/questions.jsonl")["counts"] == {"total": 30, "succeeded": 30, "failed": 0}


def test_submit_wait_exit_status_says_some_failed_and_json_carries_the_summary(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    path = write_file(tmp_path, "mixed.jsonl", MIXED)
    with event_source(pipeline):
        code, result = cli.json("submit", str(path), "--wait", "--timeout", "90", "--interval", "0.2")
    assert code == 1  # PARTIAL
    assert result["summary"]["status"] == "PARTIAL"
    assert result["summary"]["counts"] == {"total": 4, "succeeded": 2, "failed": 2}
    assert result["job"]["derived"]["failures_by_code"] == {"invalid_line": 1, "http_400": 1}


def test_submit_a_csv_with_its_template(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "cities.csv"
    path.write_text("city\nLyon\nPorto\n")
    code, _, err = cli("submit", str(path), "--template", "Name one museum in {city}.")
    assert code == 0, err
    pipeline.drain()
    answers = [
        r["response"]["body"]["choices"][0]["message"]["content"]
        for r in pipeline.jsonl("inputs/cities.csv", ".out.jsonl")
    ]
    assert answers == ["Echo: Name one museum in Lyon.", "Echo: Name one museum in Porto."]


def test_submit_puts_every_knob_in_the_job_header_and_the_function_obeys_it(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given a file of prompts to a model with a flex tier, submitted with every knob on the command line
    path = write_file(
        tmp_path, "knobs.jsonl", [json.dumps({"prompt": f"knob {i}", "model": "gpt-5-mini"}) for i in range(4)]
    )
    code, _, err = cli(
        "submit", str(path), "--endpoint", "/v1/responses", "--mode", "flex", "--cache", "off", "--max-requests", "3",
        "--budget-tokens", "100000", "--budget-usd", "2.5",
    )  # fmt: skip
    assert code == 0, err
    head = pipeline.s3.head_object(Bucket=pipeline.bucket, Key="inputs/knobs.jsonl")["Metadata"]
    assert head == {
        "promptdrop-endpoint": "/v1/responses",
        "promptdrop-mode": "flex",
        "promptdrop-cache": "off",
        "promptdrop-max-requests": "3",
        "promptdrop-budget-tokens": "100000",
        "promptdrop-budget-usd": "2.5",
    }

    # When the function runs it
    pipeline.drain()

    # Then it sent Responses requests at the flex tier, and stopped at the request cap
    summary = pipeline.summary("inputs/knobs.jsonl")
    assert summary["status"] == "BUDGET_EXCEEDED"
    assert summary["service_tiers"] == {"flex": 3}
    assert {line["response"]["body"]["object"] for line in pipeline.jsonl("inputs/knobs.jsonl", ".out.jsonl")} == {
        "response"
    }
    # and status shows the limits the upload carried, each beside what was used of it
    shown = dict(line.split(None, 1) for line in cli("status", "inputs/knobs.jsonl")[1].splitlines())
    assert re.fullmatch(
        r"\$2\.5 from the upload \(\$[\d.]+ spent\), 100,000 tokens from the upload \([\d,]+ used\), "
        r"3 requests from the upload \(3 sent\)",
        shown["budget"],
    ), shown["budget"]
    # and a limit set on the job wins over the upload's, and says so
    assert cli("budget", "inputs/knobs.jsonl", "--max-requests", "5")[0] == 0
    shown = dict(line.split(None, 1) for line in cli("status", "inputs/knobs.jsonl")[1].splitlines())
    assert shown["budget"].endswith(", 5 requests set on the job (3 sent)")
    limits = cli.json("status", "inputs/knobs.jsonl")[1]["derived"]["limits"]
    assert {kind: (x["limit"], x["set"]) for kind, x in limits.items()} == {
        "usd": (2.5, "upload"),
        "tokens": (100000, "upload"),
        "requests": (5, "job"),
    }
    assert limits["requests"]["used"] == 3


def test_submit_model_is_the_model_of_every_line_that_names_none(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    # Given a .jsonl of short forms (one naming its model, one asking for embeddings), a .txt and a
    # .csv of data rows, each submitted with --model
    lines = [
        json.dumps({"custom_id": "plain", "prompt": "no model named"}),
        json.dumps({"custom_id": "named", "prompt": "a model named", "model": "gpt-4o-mini"}),
        json.dumps({"custom_id": "embed", "prompt": "to embed", "endpoint": "/v1/embeddings"}),
    ]
    (tmp_path / "cities.csv").write_text("city\nLyon\n")
    (tmp_path / "one.txt").write_text("Say hi.")
    submits = {
        "short.jsonl": [str(write_file(tmp_path, "short.jsonl", lines))],
        "one.txt": [str(tmp_path / "one.txt")],
        "cities.csv": [str(tmp_path / "cities.csv"), "--template", "Name one museum in {city}."],
    }
    for name, argv in submits.items():
        code, _, err = cli("submit", *argv, "--model", "gpt-4o")
        assert code == 0, err
        metadata = pipeline.s3.head_object(Bucket=pipeline.bucket, Key=f"inputs/{name}")["Metadata"]
        assert metadata["promptdrop-model"] == "gpt-4o"

    # When the function has run them
    pipeline.drain()

    # Then every line naming no model was sent to the upload's model, and a line naming one kept it;
    # an embeddings line keeps its endpoint's usual model (as under PROMPTDROP_MODEL)
    answers = {name: pipeline.jsonl(f"inputs/{name}", ".out.jsonl") for name in submits}
    sent = {name: {x["custom_id"]: x["response"]["body"]["model"] for x in lines} for name, lines in answers.items()}
    assert sent["short.jsonl"] == {"plain": "gpt-4o", "named": "gpt-4o-mini", "embed": "text-embedding-3-small"}
    assert list(sent["one.txt"].values()) == ["gpt-4o"]
    assert sent["cities.csv"] == {"line-2": "gpt-4o"}
    assert pipeline.summary("inputs/one.txt")["status"] == "SUCCEEDED"
    # and a blank or non-ASCII model is refused before anything is uploaded
    for bad in ("  ", "gpt-4o-\u00e9"):
        try:
            code_or_exit = cli("submit", str(tmp_path / "one.txt"), "--key", "inputs/other.txt", "--model", bad)[0]
        except SystemExit as usage:
            code_or_exit = usage.code
        assert code_or_exit == 2, bad
    assert "Contents" not in pipeline.s3.list_objects_v2(Bucket=pipeline.bucket, Prefix="inputs/other.txt")


def test_submit_refuses_a_knob_the_function_would_refuse(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_file(tmp_path, "k.jsonl", ["{}"])
    for flags in (
        ["--endpoint", "/v1/images"],
        ["--mode", "overnight"],
        ["--budget-usd", "0"],
        ["--max-requests", "x"],
    ):
        with pytest.raises(SystemExit) as usage:  # argparse's usage error: exit 2, nothing uploaded
            cli("submit", str(path), *flags)
        assert usage.value.code == 2, flags
        assert flags[0] in capsys.readouterr().err


def test_submit_refuses_what_the_function_would_not_run(cli: Cli, tmp_path: Path) -> None:
    path = write_file(tmp_path, "notes.md", ["hello"])
    code, _, err = cli("submit", str(path))
    assert code == 2
    assert "rename it" in err
    code, _, err = cli("submit", str(write_file(tmp_path, "x.jsonl", MIXED)), "--key", "elsewhere/x.jsonl")
    assert code == 2
    assert "outside the input prefix 'inputs/'" in err


def test_status_lists_recent_jobs_newest_first(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    for name in ("one.jsonl", "two.jsonl", "three.jsonl"):
        cli("submit", str(write_file(tmp_path, name, [json.dumps({"prompt": name})])))
        pipeline.drain()

    code, jobs = cli.json("status")
    assert code == 0
    assert [j["key"] for j in jobs] == ["inputs/three.jsonl", "inputs/two.jsonl", "inputs/one.jsonl"]
    assert {j["status"] for j in jobs} == {"SUCCEEDED"}
    assert [j["key"] for j in cli.json("status", "--limit", "2")[1]] == ["inputs/three.jsonl", "inputs/two.jsonl"]

    code, text, _ = cli("status")
    rows = text.splitlines()
    assert rows[0] == "3 most recent job(s), newest first"
    assert rows[1].split() == ["started", "job", "status", "done", "failed", "cost", "input"]
    assert [row.split()[-1] for row in rows[2:]] == ["inputs/three.jsonl", "inputs/two.jsonl", "inputs/one.jsonl"]


def test_every_job_item_the_function_writes_is_listed(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    cli("submit", str(write_file(tmp_path, "listed.jsonl", [json.dumps({"prompt": "hi"})])))
    pipeline.drain()
    assert [j["key"] for j in cli.json("status")[1]] == ["inputs/listed.jsonl"]


def test_status_of_a_running_job_shows_its_total_rate_and_eta(
    slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given a 600-line file (a blank line and a broken one among them) run by the function
    p, cli = slow_pipeline, slow_cli
    prompts = [json.dumps({"prompt": f"eta {i}"}) for i in range(598)]  # 100 ms each, 8 at a time: 7 s at least
    path = write_file(tmp_path, "eta.jsonl", [*prompts[:300], "", "{broken", *prompts[300:]])
    job_id = cli.json("submit", str(path))[1]["job_id"]
    seen: list[dict[str, Any]] = []  # status --json while it ran, once it had a rate
    with event_source(p):

        def running_with_an_eta() -> bool:
            code, out, _ = cli("status", job_id, "--json")
            job = json.loads(out) if code == 0 else None
            if job is not None and job["status"] == "RUNNING" and job["derived"]["eta_s"] is not None:
                seen.append(job)
                seen.append({"text": cli("status", job_id)[1]})
            return bool(seen)

        _wait_for(running_with_an_eta)
        _wait_for(lambda: cli.json("status", job_id)[1]["status"] != "RUNNING")

    # Then while it ran, status showed the file's line count (what the function wrote), done out of
    # it, the recent rate and the time left at that rate
    running, shown = seen[0], seen[1]["text"]
    derived = running["derived"]
    assert running["line_count"] == 599  # the non-blank lines: each one an outcome
    assert 0 < derived["done"] < 599
    assert derived["lines_left"] == 599 - derived["done"]
    assert derived["recent_rate_per_s"] > 0
    assert derived["eta_s"] == pytest.approx(derived["lines_left"] / derived["recent_rate_per_s"])
    assert len(running["progress_window"]) >= 2
    lines = dict(line.split(None, 1) for line in shown.splitlines())
    assert lines["status"] == "RUNNING"
    assert re.fullmatch(r"[\d,]+/599 done: [\d,]+ succeeded, [\d,]+ failed", lines["requests"])
    assert lines["rate"].endswith("/s (last 30 s)")
    assert re.fullmatch(r"\d+s|\d+m \d\ds", lines["ETA"])

    # And the line count is what the job came to: every line an outcome
    summary = p.summary("inputs/eta.jsonl")
    assert summary["counts"]["total"] == 599
    final = cli.json("status", job_id)[1]
    assert (final["derived"]["done"], final["derived"]["lines_left"]) == (599, 0)


def test_a_split_file_gets_its_line_count_from_the_planner(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    # Given shards of 1 KiB: a 120-line file (two blank lines) is split
    pipeline.configure(PROMPTDROP_SHARD_BYTES="1024")
    lines = [json.dumps({"prompt": f"split {i}"}) for i in range(118)]
    job_id = cli.json("submit", str(write_file(tmp_path, "split.jsonl", [*lines[:50], "", *lines[50:], ""])))[1]
    pipeline.drain()

    # Then the job item holds the planner's count, which the job came to
    job = cli.json("status", job_id["job_id"])[1]
    assert job["units_total"] > 1
    assert job["line_count"] == 118 == job["total"]


def test_status_shows_counts_rising_during_a_run(slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path) -> None:
    p, cli = slow_pipeline, slow_cli
    prompts = [json.dumps({"prompt": f"rising {i}"}) for i in range(160)]  # 100 ms each, 8 at a time: 2 s at least
    job_id = cli.json("submit", str(write_file(tmp_path, "rising.jsonl", prompts)))[1]["job_id"]
    seen: list[int] = []  # done, as status showed it while the job ran
    with event_source(p):

        def ended() -> bool:
            job = cli.json("status", job_id)[1] if "JOB" in p.items(job_id) else None
            if job is not None and job["status"] == "RUNNING":
                seen.append(job["derived"]["done"])
            return job is not None and job["status"] != "RUNNING"

        _wait_for(ended)

    assert seen == sorted(seen)
    assert any(0 < done < 160 for done in seen)


def test_status_of_nothing_known_says_so(cli: Cli) -> None:
    code, _, err = cli("status", "inputs/never-uploaded.jsonl")
    assert code == 2
    assert "does not exist" in err


def test_resources_come_from_a_stack(cli: Cli, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = pipeline.stack
    template = {
        "Parameters": {"InputPrefix": {"Type": "String", "Default": "inputs/"}},
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "JobsTableName": {"Value": stack.table},
            "InputBucketName": {"Value": stack.bucket},
            "WorkQueueUrl": {"Value": stack.work_queue_url},
            "DeadLetterQueueUrl": {"Value": stack.dlq_url},
        },
    }
    import boto3

    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=f"{stack.stack_name}-cfn", TemplateBody=json.dumps(template))
    cfn.close()
    for name in ("PROMPTDROP_TABLE", "PROMPTDROP_BUCKET", "PROMPTDROP_DLQ_URL", "PROMPTDROP_WORK_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)

    code, _, err = cli("status")
    assert code == 2
    assert "give --table, or --stack NAME (its JobsTableName output), or set PROMPTDROP_TABLE" in err
    code, _, err = cli("status", "--stack", "no-such-stack")
    assert code == 2
    assert err.startswith("promptdrop status: cannot read the stack 'no-such-stack': ")
    assert cli.json("status", "--stack", f"{stack.stack_name}-cfn") == (0, [])
    assert cli.json("redrive", "--stack", f"{stack.stack_name}-cfn") == (0, {"moved": 0, "by_kind": {}})


def test_a_file_run_whole_is_counted_by_a_first_pass_beside_its_run(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given one file of each format, run whole, and a .csv whose quoting is broken
    files = {
        "rows.csv": ('city\nLyon\n"Porto,\nwith a newline"\nOslo\n', 3),  # a row may hold a newline
        "items.json": (json.dumps([{"prompt": "a"}, {"prompt": "b"}, {"nope": 1}]), 3),
        "one.txt": ("a single prompt,\non two lines\n", 1),
        "lines.jsonl": ("\n".join([json.dumps({"prompt": "x"}), "", "{broken", json.dumps({"prompt": "y"})]), 3),
    }
    ids = {}
    for name, (text, _) in files.items():
        (tmp_path / name).write_text(text)
        template = ["--template", "Name one museum in {city}."] if name.endswith(".csv") else []
        ids[name] = cli.json("submit", str(tmp_path / name), *template)[1]["job_id"]
    (tmp_path / "broken.csv").write_text('city\n"Lyon\n')
    broken = cli.json("submit", str(tmp_path / "broken.csv"), "--template", "{city}")[1]["job_id"]

    # When they have run
    pipeline.drain()

    # Then each job item holds its count — rows, items, one prompt, non-blank lines — which it came to
    for name, (_, count) in files.items():
        job = cli.json("status", ids[name])[1]
        assert (name, job["line_count"], job["total"]) == (name, count, count)
        summary = pipeline.summary(f"inputs/{name}")
        assert (summary["lines"], summary["stop"]) == ({"count": count, "done": count, "not_run": 0}, None)
    # and a file its parser rejects fails as before, without a count
    job = cli.json("status", broken)[1]
    assert (job["status"], job["error"]["code"], job["line_count"]) == ("FAILED", "invalid_csv", None)


def _keys_sharing_a_job_id_prefix(bucket: str, content: bytes) -> tuple[str, str]:
    """Two input keys whose jobs (same content: same ETag) have ids beginning with the same 8
    characters: a birthday search, some 2**16 keys."""
    etag = hashlib.md5(content).hexdigest()  # S3's ETag of a single-part upload
    first: dict[str, str] = {}
    for i in itertools.count():
        key = f"inputs/twin-{i}.jsonl"
        start = make_job_id(bucket, key, ObjectInfo(etag, None, len(content)))[:8]
        if start in first:
            return first[start], key
        first[start] = key
    raise AssertionError("unreachable")


def test_a_job_id_prefix_works_wherever_a_job_id_does_and_an_ambiguous_one_is_refused(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    p = pipeline
    # Given two finished jobs whose ids begin with the same 8 characters, each with a failed prompt
    line = json.dumps({"prompt": "twin [[fail:400]]"})
    path = write_file(tmp_path, "twin.jsonl", [line])
    a, b = (
        cli.json("submit", str(path), "--key", key)[1]["job_id"]
        for key in _keys_sharing_a_job_id_prefix(p.bucket, path.read_bytes())
    )
    p.drain()
    assert a[:8] == b[:8]
    assert a != b

    # When a prefix both begin with is given, it is refused with the matches listed
    for argv in (["status", a[:8]], ["results", a[:8]], ["cancel", a[:8]], ["redrive", "--job", a[:8]]):
        code, _, err = cli(*argv)
        assert code == 2, argv
        said = re.fullmatch(rf"promptdrop \w+: {a[:8]} begins 2 job ids \((\w+), (\w+)\): give more of it\n", err)
        assert said is not None, err
        assert set(said.groups()) == {a, b}

    # When one job's own prefix is given (one character past what they share), every command takes it
    unique = a[: next(i for i in range(32) if a[i] != b[i]) + 1]
    assert cli.json("status", unique)[1]["job_id"] == a
    code, out, _ = cli("results", unique, "--errors")
    assert (code, json.loads(out)["custom_id"]) == (0, "line-1")
    code, refused = cli.json("cancel", unique)
    assert (code, refused["job_id"], refused["outcome"]) == (1, a, "finished")
    code, limits = cli.json("budget", unique, "--max-requests", "5")
    assert (code, limits["job_id"]) == (0, a)
    assert cli.json("redrive", "--job", unique)[1] == {"moved": 1, "by_kind": {"prompt_failure": 1}}
    assert [m["job_id"] for m in peek_dlq(p)] == [b]

    # And the 12 characters the job list shows are taken when they are unique
    listed = {row.split()[1] for row in cli("status")[1].splitlines()[2:]}
    assert listed == {a[:12], b[:12]}
    if a[:12] != b[:12]:
        assert cli.json("status", a[:12])[1]["job_id"] == a
    # and a prefix no job has is an error that says so
    nobody = next(c * 10 for c in "0123456789abcdef" if not a.startswith(c) and not b.startswith(c))
    code, _, err = cli("status", nobody)
    assert (code, err.split(": ", 1)[1].split(" (")[0]) == (2, f"no job id starts with {nobody}")


# -- cancel and redrive ------------------------------------------------------------------------------


def test_cancel_asks_a_running_job_to_stop_and_refuses_a_finished_one(
    slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path
) -> None:
    p, cli = slow_pipeline, slow_cli
    # Given a finished job, and a running one (the function runs it in a container of its own)
    cli("submit", str(write_file(tmp_path, "done.jsonl", [json.dumps({"prompt": "hi"})])))
    p.drain()
    long = [json.dumps({"prompt": f"long {i}"}) for i in range(400)]  # 100 ms each, 8 at a time: 5 s at least
    running = cli.json("submit", str(write_file(tmp_path, "long.jsonl", long)))[1]["job_id"]
    run = p.spawn(p.s3_event("inputs/long.jsonl"))
    _wait_for(lambda: p.items(running).get("JOB", {}).get("progress_succeeded", 0) > 0)

    # When the running one is cancelled
    code, out, _ = cli("cancel", running)

    # Then the request is on its item, and the user is told what happens and how to resume
    assert code == 0
    requested = p.items(running)["JOB"]["cancel_requested_at"]
    assert (
        out.splitlines()[0] == f"cancel requested for job {running} (s3://{p.bucket}/inputs/long.jsonl) at {requested}"
    )
    assert f"promptdrop redrive --job {running}" in out
    # and a second cancel keeps the first request's time
    code, again = cli.json("cancel", running)
    assert (code, again["outcome"], again["cancel_requested_at"]) in [
        (0, "already_requested", requested),
        (1, "finished", requested),  # the run had stopped already
    ]
    assert [job["status"] for job in p.response(run)["jobs"]] == ["CANCELLED"]

    # When the finished one is cancelled, it is refused and left as it is
    code, refused = cli.json("cancel", "inputs/done.jsonl")
    assert (code, refused["outcome"], refused["status"]) == (1, "finished", "SUCCEEDED")
    assert "cancel_requested_at" not in p.items(refused["job_id"])["JOB"]
    unknown = "0" * 32
    code, _, err = cli("cancel", unknown)
    objects = f"s3://{p.bucket}/{unknown} or s3://{p.bucket}/inputs/{unknown}"
    assert (code, err) == (2, f"promptdrop cancel: no job {unknown} (and no object {objects})\n")


def test_redrive_by_job_moves_only_that_jobs_dead_letters(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    p.configure(PROMPTDROP_MAX_ATTEMPTS="1")
    for name in ("x.jsonl", "y.jsonl"):
        cli("submit", str(write_file(tmp_path, name, [json.dumps({"prompt": f"{name} [[fail:503x1]]"})])))
    p.drain()
    x = p.summary("inputs/x.jsonl")["job_id"]

    code, moved = cli.json("redrive", "--job", x)
    assert (code, moved) == (0, {"moved": 1, "by_kind": {"prompt_failure": 1}})
    p.drain()
    assert p.summary("inputs/x.jsonl")["status"] == "SUCCEEDED"
    assert p.summary("inputs/y.jsonl")["status"] == "FAILED"
    assert [m["job_id"] for m in p.dlq()] == [p.summary("inputs/y.jsonl")["job_id"]]  # left, visible again


def test_redrive_moves_what_was_there_not_what_fails_again_meanwhile(
    cli: Cli, pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given a prompt that always fails, dead-lettered, and the function live
    cli("submit", str(write_file(tmp_path, "hopeless.jsonl", [json.dumps({"prompt": "no [[fail:400]]"})])))
    pipeline.drain()
    with event_source(pipeline):
        # When the DLQ is redriven while the redriven prompt fails again
        code, moved = cli.json("redrive")
        _wait_for(lambda: len(peek_dlq(pipeline)) == 1)

    # Then it was moved once (not again and again), and its new dead letter waits for the next redrive
    assert (code, moved) == (0, {"moved": 1, "by_kind": {"prompt_failure": 1}})
    assert pipeline.times_seen("no [[fail:400]]") == 2


def test_cancel_mid_run_then_redrive_finishes_paying_nothing_twice(
    slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path
) -> None:
    p, cli = slow_pipeline, slow_cli
    prompts = [f"long {i}" for i in range(160)]  # 100 ms each, 8 at a time: 2 s at least
    path = write_file(tmp_path, "long.jsonl", [json.dumps({"prompt": x}) for x in prompts])
    with event_source(p):
        job_id = cli.json("submit", str(path))[1]["job_id"]
        # When the job is cancelled once it has begun answering
        _wait_for(lambda: p.prompts_seen() >= 16)
        code, _, err = cli("cancel", job_id)
        assert code == 0, err
        _wait_for(lambda: p.items(job_id)["JOB"]["status"] != "RUNNING")

    # Then it ends CANCELLED with what was done, and a file_failure (cancelled) to resume it
    job = cli.json("status", job_id)[1]
    assert job["status"] == "CANCELLED"
    done = job["total"]
    assert 0 < done < 160
    assert [m["error"]["code"] for m in peek_dlq(p) if m["kind"] == "file_failure"] == ["cancelled"]
    # and status and the summary say how far it got, what did not run, and why
    assert (job["line_count"], job["derived"]["done"], job["derived"]["lines_left"]) == (160, done, 160 - done)
    assert job["error"]["code"] == "cancelled"
    lines = dict(line.split(None, 1) for line in cli("status", job_id)[1].splitlines())
    assert lines["requests"] == f"{done}/160 done: {done} succeeded, 0 failed"
    assert lines["left"] == f"{160 - done} line(s) not run"
    assert lines["cancelled"] == f"requested at {job['cancel_requested_at']}"
    assert lines["error"].startswith("cancelled: cancelled on request")
    summary = p.summary("inputs/long.jsonl")
    assert summary["counts"]["total"] == done  # its meaning kept: the lines done
    assert summary["lines"] == {"count": 160, "done": done, "not_run": 160 - done}
    assert summary["stop"]["reason"] == summary["last_run"]["stopped"] == "cancel"
    assert (summary["stop"]["code"], summary["stop"]["cancel_requested_at"]) == (
        "cancelled",
        job["cancel_requested_at"],
    )
    # and so does its completion event
    got = p.sqs.receive_message(QueueUrl=p.stack.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    (event,) = [json.loads(m["Body"]) for m in got.get("Messages", [])]
    assert event["detail-type"] == "Job Cancelled"
    assert (event["detail"]["lines"], event["detail"]["stop"]) == (summary["lines"], summary["stop"])

    # When it is redriven, it finishes, and no prompt was sent twice
    assert cli.json("redrive", "--job", job_id)[1] == {"moved": 1, "by_kind": {"file_failure": 1}}
    p.drain()
    job = cli.json("status", job_id)[1]
    assert (job["status"], job["succeeded"], job["failed"]) == ("SUCCEEDED", 160, 0)
    assert (job["error"], job["derived"]["lines_left"]) == (None, 0)  # the resumed job's stop is forgotten
    assert (p.summary("inputs/long.jsonl")["stop"], p.summary("inputs/long.jsonl")["lines"]["not_run"]) == (None, 0)
    assert all(p.times_seen(x) == 1 for x in prompts)


def test_a_budget_stop_and_a_fatal_stop_say_what_was_done_what_was_not_and_why(cli: Cli, pipeline: Pipeline) -> None:
    p = pipeline
    # Given a 60-line file allowed 20 requests (its upload's metadata), and a 40-line file whose
    # 11th line the API answers 401 (a key every request would share)
    capped = [json.dumps({"prompt": f"capped {i}"}) for i in range(60)]
    p.s3.put_object(
        Bucket=p.bucket, Key="inputs/capped.jsonl", Body="\n".join(capped), Metadata={"promptdrop-max-requests": "20"}
    )
    fatal = [json.dumps({"prompt": f"fatal {i}" + (" [[fail:401]]" if i == 10 else "")}) for i in range(40)]
    p.put("inputs/fatal.jsonl", "\n".join(fatal))

    # When both have run
    p.drain()

    # Then the budget-stopped one says it did 20 of its 60 lines, 40 not run, stopped by its budget
    summary = p.summary("inputs/capped.jsonl")
    assert (summary["status"], summary["counts"]["total"]) == ("BUDGET_EXCEEDED", 20)
    assert summary["lines"] == {"count": 60, "done": 20, "not_run": 40}
    assert summary["stop"]["reason"] == summary["last_run"]["stopped"] == "budget"
    assert summary["stop"]["code"] == "budget_exceeded"
    assert "20 of 20 requests sent" in summary["stop"]["message"]
    job = cli.json("status", "inputs/capped.jsonl")[1]
    assert (job["error"]["code"], job["derived"]["lines_left"]) == ("budget_exceeded", 40)
    lines = dict(line.split(None, 1) for line in cli("status", "inputs/capped.jsonl")[1].splitlines())
    assert (lines["status"], lines["requests"]) == ("BUDGET_EXCEEDED", "20/60 done: 20 succeeded, 0 failed")
    assert lines["left"] == "40 line(s) not run"
    assert lines["error"].startswith("budget_exceeded: budget exceeded: 20 of 20 requests sent")

    # and the fatally stopped one, the lines it did and did not run, stopped by the API's refusal
    summary = p.summary("inputs/fatal.jsonl")
    done = summary["counts"]["total"]
    assert summary["status"] == "FAILED"
    assert summary["lines"] == {"count": 40, "done": done, "not_run": 40 - done}
    assert 0 < done < 40
    assert summary["stop"]["reason"] == summary["last_run"]["stopped"] == "fatal"
    assert summary["stop"]["message"].startswith("stopped early: ")
    job = cli.json("status", "inputs/fatal.jsonl")[1]
    assert job["derived"]["lines_left"] == 40 - done
    assert (job["error"]["code"], job["error"]["message"]) == (summary["stop"]["code"], summary["stop"]["message"])

    # and each one's completion event says the same: the line count, done, not run, and the reason
    got = p.sqs.receive_message(QueueUrl=p.stack.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    events = {e["detail"]["input"]["key"]: e for e in (json.loads(m["Body"]) for m in got.get("Messages", []))}
    capped_event, fatal_event = events["inputs/capped.jsonl"], events["inputs/fatal.jsonl"]
    assert capped_event["detail-type"] == "Job Budget Exceeded"
    assert capped_event["detail"]["lines"] == {"count": 60, "done": 20, "not_run": 40}
    assert (capped_event["detail"]["stop"]["reason"], capped_event["detail"]["stop"]["code"]) == (
        "budget",
        "budget_exceeded",
    )
    assert fatal_event["detail"]["lines"] == summary["lines"]
    assert fatal_event["detail"]["stop"] == summary["stop"]


def _wait_for(condition: Any, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
