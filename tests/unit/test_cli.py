"""The CLI's offline parts: ``estimate`` (the function's own parser, no AWS, no API), the views,
``submit --wait``'s progress lines, and where resources come from. The commands that touch AWS:
tests/integration/test_cli.py."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from promptdrop.cli import main
from promptdrop.cli.figures import duration, money
from promptdrop.cli.resources import Clients, Resources, resolve
from promptdrop.cli.view import INSTALL_HINT, Column, View
from promptdrop.formats import Request, request_from_object
from promptdrop.jobs.cost_guard import worst_case

BAD_LINES = [
    json.dumps({"custom_id": "a", "prompt": "abcdefgh", "max_tokens": 100}).encode(),  # 8 chars: 2 + 4 tokens
    json.dumps({"custom_id": "b", "prompt": "x" * 40, "n": 2, "max_tokens": 10}).encode(),  # 10 + 4; 2 x 10 out
    b"",
    b"{oops",
    json.dumps({"custom_id": "a", "prompt": "again"}).encode(),
    json.dumps({"prompt": "s", "stream": True}).encode(),
    json.dumps({"custom_id": "m", "model": "mystery-model", "prompt": "abcd", "system": "be brief"}).encode(),
    b"\xff\xfe",
    json.dumps({"custom_id": "q"}).encode(),
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(BAD_LINES) + b"\n")
    return path


# -- estimate --------------------------------------------------------------------------------------


def test_estimate_reports_every_line_that_would_fail_and_why(
    bad_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "estimate", str(bad_file), "--json")
    assert code == 1  # some lines would fail
    found = json.loads(out)
    assert (found["lines"], found["requests"], found["failing"]) == (8, 3, 5)
    assert found["failing_lines"] == [
        {
            "line": 4,
            "custom_id": "line-4",
            "reason": "not valid JSON: Expecting property name enclosed in double quotes at column 2: {oops",
        },
        {"line": 5, "custom_id": "a", "reason": "custom_id 'a' is already used by line 1"},
        {"line": 6, "custom_id": "line-6", "reason": '"stream": true is not supported in a batch; remove it'},
        {"line": 8, "custom_id": "line-8", "reason": "not valid UTF-8 (byte 0)"},
        {"line": 9, "custom_id": "q", "reason": 'line: give exactly one of "prompt" or "messages"'},
    ]
    # input: 6 + 14 for gpt-4o-mini; (8 + 4) // 4 + 2 x 4 = 11 for the system + user pair
    assert found["by_model"] == {
        "gpt-4o-mini": {"requests": 2, "input_tokens": 20, "output_tokens": 100 + 2 * 10},
        "mystery-model": {"requests": 1, "input_tokens": 11, "output_tokens": 256},  # no max_tokens: assumed
    }
    assert (found["input_tokens_estimate"], found["output_tokens_worst_case"]) == (31, 376)
    assert found["requests_without_output_limit"] == 1
    # a model without a price: said so, no number
    assert (found["unknown_models"], found["cost_usd_worst_case"]) == (["mystery-model"], None)


def test_estimate_prices_known_models_and_lists_the_first_failures(
    bad_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [line for line in BAD_LINES if b"mystery" not in line]
    bad_file.write_bytes(b"\n".join(lines))
    code, out, _ = run(capsys, "estimate", str(bad_file), "--show", "2")
    assert code == 1
    assert out.splitlines() == [
        f"{bad_file} (default model gpt-4o-mini)",
        "lines          7 (blank ones skipped)",
        "requests       2",
        "would fail     5",
        "input tokens   ~20 (estimate: ~4 characters a token)",
        "output tokens  120 at most",
        # (20 x $0.15 + 120 x $0.60) per million tokens
        "cost realtime  $0.000075 at most (input ~$0.000003 + output at most $0.000072)",
        "cost flex      $0.000075 at most (no request goes flex: none is a chat or Responses line to a model that "
        "offers it)",
        # genai-prices' batch price for gpt-4o-mini: (20 x $0.075 + 120 x $0.30) per million tokens
        "cost batch     $0.000038 at most (every request at the Batch API's rates)",
        "cost auto      $0.000038 to $0.000075 at most (batch while the deadline allows, then flex, then standard)",
        "lines that would fail (2 shown, 3 more)",
        "line  custom_id  reason",
        "   4  line-4     not valid JSON: Expecting property name enclosed in double quotes at column 2: {oops",
        "   5  a          custom_id 'a' is already used by line 1",
    ]


def test_estimate_of_a_csv_uses_its_template_and_of_an_unknown_format_fails_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cities = tmp_path / "cities.csv"
    cities.write_text("city,max_tokens\nLyon,50\n,50\nPorto,50\n")
    code, out, _ = run(capsys, "estimate", str(cities), "--template", "A museum in {city}?", "--json")
    found = json.loads(out)
    assert (code, found["requests"], found["failing"]) == (1, 2, 1)
    assert found["failing_lines"] == [
        {"line": 3, "custom_id": "line-3", "reason": "the template's columns ['city'] are all empty"}
    ]
    assert found["output_tokens_worst_case"] == 100

    notes = tmp_path / "notes.md"
    notes.write_text("hello")
    code, out, _ = run(capsys, "estimate", str(notes))
    assert code == 1
    assert out.startswith(f"{notes}: the whole file would fail (unsupported_format)")


def test_estimate_of_a_csv_without_a_prompt_column_points_to_its_template_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cities = tmp_path / "cities.csv"
    cities.write_text("city\nLyon\n")
    code, out, _ = run(capsys, "estimate", str(cities))
    assert code == 1
    assert out.splitlines()[-1] == (
        "(a .csv without a prompt column: give its template with --template, as submit --template)"
    )
    assert run(capsys, "estimate", str(cities), "--template", "A museum in {city}?")[0] == 0


def test_estimate_follows_each_lines_endpoint_and_the_files_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file mixing endpoints: Batch API lines naming theirs, short forms taking the default
    lines = [
        {"custom_id": "r", "method": "POST", "url": "/v1/responses",
         "body": {"model": "gpt-4o-mini", "input": "x" * 40, "instructions": "y" * 8, "max_output_tokens": 30}},
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": ["a" * 20, "b" * 20]}},
        {"custom_id": "c", "method": "POST", "url": "/v1/completions",
         "body": {"model": "gpt-3.5-turbo-instruct", "prompt": ["p" * 8, "q" * 8], "n": 2}},
        {"custom_id": "s", "prompt": "z" * 80},
    ]  # fmt: skip
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(line) + "\n" for line in lines))

    # When it is estimated with Responses as the file's endpoint
    code, out, _ = run(capsys, "estimate", str(mixed), "--endpoint", "/v1/responses", "--json")

    # Then each line counts its own endpoint's input and output: none for embeddings, the API's
    # default of 16 per prompt and choice for completions, the short form as a Responses request
    assert code == 0
    by_model = json.loads(out)["by_model"]
    # (Responses: 4 tokens of framing a request, as the function's own estimate counts them)
    assert by_model["gpt-4o-mini"] == {"requests": 2, "input_tokens": 12 + 20 + 2 * 4, "output_tokens": 30 + 256}
    assert by_model["text-embedding-3-small"] == {"requests": 1, "input_tokens": 10, "output_tokens": 0}
    assert by_model["gpt-3.5-turbo-instruct"] == {"requests": 1, "input_tokens": 4, "output_tokens": 16 * 2 * 2}
    code, _, err = run(capsys, "estimate", str(mixed), "--endpoint", "/v1/images/generations")
    assert code == 2
    assert "--endpoint /v1/images/generations: not one of /v1/chat/completions" in err


def test_estimate_counts_each_lines_output_as_the_cost_guard_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a line of every endpoint, with and without output limits
    bodies = [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "n": 3}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 9}),
        ("/v1/completions", {"prompt": ["a", "b"], "n": 2, "best_of": 3}),
        ("/v1/embeddings", {"input": "hi"}),
        ("/v1/moderations", {"input": "hi"}),
    ]
    lines = [
        {"custom_id": f"l{i}", "method": "POST", "url": url, "body": {"model": "gpt-4o-mini", **body}}
        for i, (url, body) in enumerate(bodies)
    ]
    path = tmp_path / "every.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    # When it is estimated, and each line is parsed as the function parses it for the cost guard
    code, out, _ = run(capsys, "estimate", str(path), "--json")
    guarded = [request_from_object(line, line=1, default_id="x", default_model="m", text_len=9) for line in lines]

    # Then the estimate's worst-case output is the sum of the cost guard's (7x3 + 256 + 9 + 16x3x2 + 0 + 0)
    assert code == 0
    outputs = [r.output_tokens for r in guarded if isinstance(r, Request) and worst_case(r).tokens == r.cost]
    assert json.loads(out)["output_tokens_worst_case"] == sum(outputs) == 21 + 256 + 9 + 96
    assert len(outputs) == len(lines)


def test_estimate_prices_the_worst_case_in_each_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given chat lines to a model that offers flex, one to a model that does not, and an embeddings line
    lines = [
        *({"prompt": f"question {i}", "model": "gpt-5-mini", "max_tokens": 100} for i in range(3)),
        {"prompt": "no flex for this model", "model": "gpt-4o-mini", "max_tokens": 50},
        {"method": "POST", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": "x" * 400}},
    ]
    path = tmp_path / "modes.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    # When it is estimated
    code, out, _ = run(capsys, "estimate", str(path), "--json")
    found = json.loads(out)

    # Then each mode prices the same worst-case tokens at the tier it sends each request at, as
    # genai-prices prices them: flex only the gpt-5-mini chat lines, batch every line
    def price(model: str, context: dict[str, str] | None = None) -> float:
        figures = found["by_model"][model]
        usage = Usage(input_tokens=figures["input_tokens"], output_tokens=figures["output_tokens"])
        return float(calc_price(usage, model_ref=model, provider_id="openai", price_context=context).total_price)

    models = ("gpt-5-mini", "gpt-4o-mini", "text-embedding-3-small")
    batch = {"processing": "batch"}
    realtime = sum(price(m) for m in models)
    flex = price("gpt-5-mini", {"service_tier": "flex"}) + price("gpt-4o-mini") + price("text-embedding-3-small")
    batched = price("gpt-5-mini", batch) + price("gpt-4o-mini", batch) + price("text-embedding-3-small", batch) / 2
    assert code == 0
    assert found["requests_flex"] == 3
    by_mode = found["cost_usd_worst_case_by_mode"]
    assert by_mode["realtime"] == found["cost_usd_worst_case"]
    assert by_mode["realtime"] == pytest.approx(realtime, abs=1e-6)
    assert by_mode["flex"] == pytest.approx(flex, abs=1e-6)
    # (text-embedding-3-small: genai-prices has no batch price for it, so half the standard one, as OpenAI bills)
    assert by_mode["batch"] == pytest.approx(batched, abs=1e-6)
    assert by_mode["auto"] == {"low": by_mode["batch"], "high": by_mode["realtime"]}
    assert by_mode["batch"] < by_mode["flex"] < by_mode["realtime"]

    # and the table says so, one line a mode
    code, out, _ = run(capsys, "estimate", str(path))
    rows = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith("cost")}
    assert "3 of 5 request(s) go flex" in rows["cost flex"]
    assert rows["cost auto"].split()[2:5] == [money(by_mode["batch"]), "to", money(by_mode["realtime"])]


def test_estimate_runs_as_a_module_without_aws_or_rich(bad_file: Path) -> None:
    # No AWS environment at all, and rich never imported off a terminal
    script = (
        "import sys, runpy; sys.argv = ['promptdrop', 'estimate', sys.argv[1], '--json']\n"
        "try:\n    runpy.run_module('promptdrop.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert 'rich' not in sys.modules; sys.exit(exc.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(bad_file)], capture_output=True, text=True, env={}, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["requests"] == 3


def test_a_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "estimate", str(tmp_path / "nope.jsonl"))
    assert (code, err) == (2, f"promptdrop estimate: {tmp_path / 'nope.jsonl'}: no such file\n")


def test_budget_needs_a_limit_and_refuses_one_that_is_not_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "budget", "0123456789abcdef0123456789abcdef")
    assert (code, err) == (
        2,
        "promptdrop budget: say which limit to set: --usd N, --tokens N and/or --max-requests N\n",
    )
    with pytest.raises(SystemExit) as exited:
        main(["budget", "0123456789abcdef0123456789abcdef", "--usd", "-1"])
    assert exited.value.code == 2
    assert "a limit must be above 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["estimate", "submit", "status", "cancel", "budget", "results", "redrive", "local", None]
)
def test_help_reads_as_plain_text(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    # Each command's description is its module's docstring, written in reST for the code's readers
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "usage: promptdrop" in shown
    # Then --help shows none of its markup: no ``literal``, no :role:`target`
    assert "``" not in shown
    assert re.search(r":[a-z]+:`", shown) is None, shown
    if command == "estimate":  # a cross-reference reads as its target
        assert "(promptdrop.formats.parse_stream, by suffix)" in " ".join(shown.split())
    if command == "submit":  # a flag is never cut at its hyphen
        assert "--budget-tokens, --max-requests." in " ".join(shown.split())  # not "--max- requests."
    if command == "local":  # and a docstring's paragraphs stay apart
        assert "\n\nWhat it holds" in shown


# -- views -----------------------------------------------------------------------------------------


def test_plain_tables_align_for_grep_and_diff() -> None:
    out = io.StringIO()
    View(out=out, terminal=False).table([Column("job"), Column("done", right=True)], [["a", "1"], ["bbb", "1,000"]])
    assert out.getvalue().splitlines() == ["job   done", "a        1", "bbb  1,000"]


def test_a_terminal_gets_rich_tables() -> None:
    out = io.StringIO()
    View(out=out, terminal=True).table([Column("job")], [["abc"]], title="jobs")
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # without the styles
    assert text.splitlines() == ["jobs   ", "┏━━━━━┓", "┃ job ┃", "┡━━━━━┩", "│ abc │", "└─────┘"]


def test_without_rich_a_terminal_gets_plain_lines_and_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # as if the cli extra were not installed
    out, err = io.StringIO(), io.StringIO()
    view = View(out=out, err=err, terminal=True)
    view.fields([("status", "RUNNING")])
    assert not view.rich
    assert out.getvalue() == "status  RUNNING\n"
    assert INSTALL_HINT in err.getvalue()


def test_plain_progress_goes_to_stderr_when_something_changed() -> None:
    out, err = io.StringIO(), io.StringIO()
    with View(out=out, err=err, terminal=False).progress("WAITING", every_s=0) as bar:
        for done in (0, 0, 5):
            bar.update(status="RUNNING", done=done, total=10, rate="1.0/s", eta="5s", detail="ok 5")
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        "RUNNING   0/10  1.0/s  ETA 5s  ok 5",
        "RUNNING   5/10  1.0/s  ETA 5s  ok 5",
    ]


# -- figures ---------------------------------------------------------------------------------------


def test_durations_and_money_read_naturally() -> None:
    assert [duration(s) for s in (None, 4.4, 65, 7260)] == ["-", "4s", "1m 05s", "2h 01m"]
    assert [money(v) for v in (None, 0, "0.00225", 12.0)] == ["-", "$0", "$0.00225", "$12"]


# -- resources -------------------------------------------------------------------------------------


class _Stack(Clients):
    def stack_outputs(self, stack_name: str) -> dict[str, str]:
        return {"JobsTableName": f"{stack_name}-table", "InputBucketName": "stack-bucket", "InputPrefix": "in/"}


def _args(**given: Any) -> argparse.Namespace:
    names = ("stack", "table", "bucket", "dlq_url", "work_queue_url", "input_prefix")
    return argparse.Namespace(**{name: given.get(name) for name in names})


def test_resources_come_from_flags_then_the_stack_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTDROP_TABLE", "env-table")
    monkeypatch.setenv("PROMPTDROP_DLQ_URL", "env-dlq")
    monkeypatch.delenv("PROMPTDROP_INPUT_PREFIX", raising=False)
    monkeypatch.delenv("PROMPTDROP_BUCKET", raising=False)
    assert resolve(_args(), _Stack()) == Resources(table="env-table", dlq_url="env-dlq", input_prefix="inputs/")
    assert resolve(_args(stack="s", table="flag-table"), _Stack()) == Resources(
        table="flag-table", bucket="stack-bucket", dlq_url="env-dlq", input_prefix="in/"
    )
    with pytest.raises(Exception, match=r"give --work-queue-url, or --stack NAME \(its WorkQueueUrl output\)"):
        resolve(_args(), _Stack()).need("work_queue_url")


# -- redrive ---------------------------------------------------------------------------------------


class _FakeDlq:
    """An SQS client holding one DLQ whose clock runs ``skew_s`` ahead of this machine's."""

    def __init__(self, messages: list[tuple[str, float]], skew_s: float) -> None:
        self.skew_s = skew_s
        self.visible = [
            {"MessageId": str(i), "ReceiptHandle": f"r{i}", "Body": body, "Attributes": {"SentTimestamp": str(int(t))}}
            for i, (body, t) in enumerate(messages)
        ]
        self.sent: list[str] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        from email.utils import formatdate

        batch, self.visible = (
            self.visible[: kwargs["MaxNumberOfMessages"]],
            self.visible[kwargs["MaxNumberOfMessages"] :],
        )
        date = formatdate(time.time() + self.skew_s, usegmt=True)
        return {"Messages": batch, "ResponseMetadata": {"HTTPHeaders": {"date": date}}}

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.sent += [e["MessageBody"] for e in kwargs["Entries"]]
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]]}

    def delete_message_batch(self, **kwargs: Any) -> None:
        return None

    def change_message_visibility_batch(self, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize("skew_s", [0, -600, 600])
def test_redrive_moves_the_messages_older_than_itself_on_the_queues_clock(skew_s: float) -> None:
    from promptdrop.cli import redrive

    now_ms = (time.time() + skew_s) * 1000  # the queue's clock
    old = json.dumps({"kind": "prompt_failure", "job_id": "j"})
    new = json.dumps({"kind": "prompt_failure", "job_id": "j", "again": True})  # failed again meanwhile
    sqs = _FakeDlq([(old, now_ms - 60_000), (new, now_ms + 5_000)], skew_s)
    assert redrive(sqs, dlq_url="dlq", work_queue_url="work") == {"prompt_failure": 1}
    assert sqs.sent == [old]


# -- submit --wait follows the job item --------------------------------------------------------------


class _Jobs:
    """A job store whose job item changes at each read, as a running job's does."""

    def __init__(self, states: list[dict[str, Any] | None]) -> None:
        self.states = states
        self.reads = 0

    def get(self, job_id: str) -> Any:
        from promptdrop.cli.jobstore import Job

        state = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return None if state is None else Job(job_id=job_id, bucket="b", key="inputs/k.jsonl", etag="e", **state)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _window(*samples: tuple[float, int]) -> list[list[float]]:
    """A progress window as the function's reports build it, one report a sample (JobRecord.window_after)."""
    from promptdrop.records import JobRecord

    window: list[list[float]] = []
    for previous, (at, done) in itertools.pairwise(samples):
        window = JobRecord.window_after(window, at, done, start=previous)
    return window


@pytest.mark.parametrize("terminal", [True, False])
def test_follow_shows_progress_until_the_job_ends(terminal: bool) -> None:
    from promptdrop.cli.submit import follow

    # Given a 100-line job whose item the function updates: 10 done in its first 2 s, then 42 at 6 s
    running = {"line_count": 100, "progress_prompt_tokens": 10, "progress_cost_usd": 0.001}
    store = _Jobs(
        [
            None,  # the function has not started it yet
            running | {"progress_succeeded": 10, "progress_window": _window((0, 0), (2, 10))},
            running | {"progress_succeeded": 40, "progress_failed": 2, "progress_window": _window((0, 0), (6, 42))},
            {"status": "PARTIAL", "line_count": 100, "total": 100, "succeeded": 97, "failed": 3},
        ]
    )
    clock, out, err = _Clock(), io.StringIO(), io.StringIO()
    view = View(out=out, err=err, terminal=terminal)
    job = follow(store, "j", view, interval_s=2, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert job is not None
    assert (job.status, job.done, store.reads, clock.now) == ("PARTIAL", 100, 4, 6.0)
    if terminal:  # the bar, as last drawn
        assert "PARTIAL ━━━━" in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
        return
    # plain: a line when the status changes, else at most every 5 s (42/100, 2 s later, is not shown);
    # done out of the line count, the job's recent rate (10 in 2 s) and the time left at it (90 at 5/s)
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        "WAITING   0  -  ETA -  for the job to start",
        "RUNNING   10/100  5.0/s  ETA 18s  ok 10  failed 0  10 tokens  $0.001",
        "PARTIAL   100/100  -  ETA -  ok 97  failed 3  0 tokens  -",
    ]


def test_follow_gives_up_at_its_timeout() -> None:
    from promptdrop.cli.submit import follow

    clock = _Clock()
    store = _Jobs([{"line_count": 10}])
    view = View(out=io.StringIO(), err=io.StringIO(), terminal=False)
    assert follow(store, "j", view, interval_s=2, timeout_s=5, clock=clock, sleep=clock.sleep) is None  # type: ignore[arg-type]
    assert clock.now == 5.0


def test_a_running_job_silent_for_longer_than_its_reports_shows_no_eta() -> None:
    from datetime import UTC, datetime, timedelta

    from promptdrop.cli.jobstore import Job
    from promptdrop.cli.status import progress_cells

    # Given a running job whose last progress report, at 10/s with 500 lines left, is a minute old
    now = datetime(2030, 1, 1, tzinfo=UTC)
    last = now - timedelta(seconds=60)
    job = Job(
        job_id="j",
        bucket="b",
        key="k.jsonl",
        etag="e",
        line_count=1000,
        progress_succeeded=500,
        updated_at=last.isoformat(),
        progress_window=_window((last.timestamp() - 10, 400), (last.timestamp(), 500)),
    )
    # Then its rate is the last one known, and no ETA is made up from it
    assert progress_cells(job, now) == ("10.0/s (last 30 s)", "- (no progress report for 1m 00s)")
    # while a minute earlier it had one
    assert progress_cells(job, last) == ("10.0/s (last 30 s)", "50s")


def test_a_running_job_that_is_ending_says_so_instead_of_an_eta() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from promptdrop.cli.jobstore import Job
    from promptdrop.cli.status import describe, progress_cells

    now = datetime(2030, 1, 1, tzinfo=UTC)
    at = now.timestamp()
    running = Job(
        job_id="j",
        bucket="b",
        key="k.jsonl",
        etag="e",
        line_count=1000,
        progress_succeeded=1000,
        updated_at=now.isoformat(),
        progress_window=_window((at - 10, 900), (at, 1000)),
    )
    # Given every line with its outcome: the job ends once its outputs are written
    assert progress_cells(running, now)[1] == "- (all done: writing the outputs)"
    # Given a cancel that took effect (the job item has its reason) while the outputs are written
    stopping = replace(
        running,
        progress_succeeded=400,
        cancel_requested_at="2029-12-31T23:59:00+00:00",
        error={"code": "cancelled", "message": "cancelled on request"},
    )
    assert describe(stopping) == "RUNNING (stopping: cancelled)"
    assert progress_cells(stopping, now)[1] == "- (stopping: cancelled; writing the outputs)"
    assert stopping.eta_s is None  # no time left is made up for the lines it will not run
