"""X-Ray tracing through the real handler, in a container of its own as Lambda runs it with active
tracing: the spans it sends to the X-Ray daemon's UDP port (a socket of this test's), and none when
tracing is off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from promptdrop.tracing import CALL_SPANS_PER_RUN

from infra.invoke import spawn
from tests.integration.conftest import ROOT, Pipeline

ROOT_ID = "1-5759e988-bd862e3fe1be46a994272793"
# What Lambda sets for an invocation it sampled (Sampled=1); the function's own segment is its parent.
TRACE_HEADER = f"Root={ROOT_ID};Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket where the X-Ray daemon would listen (AWS_XRAY_DAEMON_ADDRESS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # a run's spans, unread until it ends
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        yield sock


def received(sock: socket.socket) -> list[dict[str, Any]]:
    """Every entity sent so far: each datagram is a JSON header line, then the segment document."""
    entities = []
    while True:
        try:
            data = sock.recv(65_536)
        except TimeoutError:
            return entities
        header, document = data.decode().split("\n", 1)
        assert json.loads(header) == {"format": "json", "version": 1}
        entities.append(json.loads(document))


def invoke_in_lambda(p: Pipeline, event: dict[str, Any], **env: str) -> Any:
    """The handler in a fresh process with Lambda's environment for a traced invocation, plus ``env``."""
    lambda_env = {"LAMBDA_TASK_ROOT": str(ROOT), "_X_AMZN_TRACE_ID": TRACE_HEADER, **env}
    process = spawn(event, {**os.environ, **p.env, "POWERTOOLS_METRICS_DISABLED": "true", **lambda_env})
    return Pipeline.response(process)


def test_a_traced_run_sends_its_span_and_one_for_each_aws_and_api_call_under_it(
    pipeline: Pipeline, daemon: socket.socket
) -> None:
    # Given active tracing (what the Tracing parameter sets) and a three-prompt file
    p = pipeline
    key = "inputs/traced.jsonl"
    p.put(key, "\n".join(json.dumps({"prompt": f"traced {i}"}) for i in range(3)))
    address = "{}:{}".format(*daemon.getsockname())

    # When a sampled invocation runs it
    response = invoke_in_lambda(p, p.s3_event(key), POWERTOOLS_TRACE_DISABLED="false", AWS_XRAY_DAEMON_ADDRESS=address)
    assert [job["status"] for job in response["jobs"]] == ["SUCCEEDED"]
    entities = received(daemon)

    # Then the run has its span in the invocation's trace, searchable by the file's key
    assert all(e["trace_id"] == ROOT_ID for e in entities)
    (run,) = [e for e in entities if e["name"] == "## run file"]
    assert run["annotations"] == {"key": key}
    assert "fault" not in run
    # and each AWS call made during the run is a child of it, with its operation and status
    calls = [e for e in entities if e.get("parent_id") == run["id"]]
    aws = [c for c in calls if c["namespace"] == "aws"]
    assert {c["name"] for c in aws} >= {"s3", "dynamodb"}
    assert {"HeadObject", "GetObject", "PutObject", "BatchWriteItem"} <= {c["aws"]["operation"] for c in aws}
    assert all(c["http"]["response"]["status"] == 200 for c in aws)
    assert all(c["aws"]["region"] == p.stack.region for c in aws)
    # and each API call too: one per prompt, under the API's host
    api = [c for c in calls if c["namespace"] == "remote"]
    assert len(api) == 3
    assert {c["name"] for c in api} == {"127.0.0.1"}
    assert {c["http"]["request"]["url"] for c in api} == {p.server.base_url.rstrip("/") + "/chat/completions"}
    assert all(c["http"]["response"]["status"] == 200 for c in api)
    # and nothing outside a run's span is left without a parent in this trace
    assert all(e["id"] == run["id"] or e.get("parent_id") == run["id"] for e in entities)


def test_a_run_keeps_at_most_its_share_of_call_spans_and_says_how_many_it_left_out(
    pipeline: Pipeline, daemon: socket.socket
) -> None:
    # Given a file with more prompts than a run keeps call spans for
    p = pipeline
    key = "inputs/many.jsonl"
    p.put(key, "\n".join(json.dumps({"prompt": f"many {i}"}) for i in range(CALL_SPANS_PER_RUN + 20)))
    address = "{}:{}".format(*daemon.getsockname())

    # When a sampled invocation runs it
    invoke_in_lambda(p, p.s3_event(key), POWERTOOLS_TRACE_DISABLED="false", AWS_XRAY_DAEMON_ADDRESS=address)
    entities = received(daemon)

    # Then the run's span has that many children, and counts the calls it left out
    (run,) = [e for e in entities if e["name"] == "## run file"]
    children = [e for e in entities if e.get("parent_id") == run["id"]]
    assert len(children) == CALL_SPANS_PER_RUN
    dropped = run["metadata"]["promptdrop"]["call_spans_dropped"]
    api_spans = sum(c["namespace"] == "remote" for c in children)
    assert dropped >= CALL_SPANS_PER_RUN + 20 - api_spans  # every prompt was sent: the rest of them at least


def test_with_tracing_off_nothing_is_sent_and_the_x_ray_sdk_is_never_imported(
    pipeline: Pipeline, daemon: socket.socket
) -> None:
    # Given Lambda's environment with tracing off (the Tracing parameter's default)
    p = pipeline
    key = "inputs/untraced.jsonl"
    p.put(key, json.dumps({"prompt": "untraced"}))
    address = "{}:{}".format(*daemon.getsockname())

    # When an invocation runs it
    response = invoke_in_lambda(p, p.s3_event(key), POWERTOOLS_TRACE_DISABLED="true", AWS_XRAY_DAEMON_ADDRESS=address)

    # Then it answers, and the daemon hears nothing
    assert [job["status"] for job in response["jobs"]] == ["SUCCEEDED"]
    assert received(daemon) == []


def test_tracing_off_costs_no_import() -> None:
    # The handler, its runtime and a run's span, loaded with tracing off: the X-Ray SDK stays unloaded
    # (a third of a second at cold start). A fresh interpreter: this one may have loaded it already.
    code = (
        "import sys, asyncio\n"
        "from promptdrop import handler, runtime, tracing\n"
        "async def run():\n"
        "    async with tracing.run_span('run file', key='k'):\n"
        "        pass\n"
        "asyncio.run(run())\n"
        "assert not [m for m in sys.modules if m.startswith('aws_xray_sdk')], 'imported'\n"
    )
    env = {**os.environ, "LAMBDA_TASK_ROOT": str(ROOT), "POWERTOOLS_TRACE_DISABLED": "true"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=60)


SENDER_SCRIPT = """
import asyncio
from promptdrop import tracing

class RateLimited(Exception):
    status_code = 429  # as the SDK's status errors carry it

async def answer(path, body, timeout_s=None):
    return type("Reply", (), {"status_code": 200})()

async def refuse(path, body, timeout_s=None):
    raise RateLimited("slow down")

async def hang(path, body, timeout_s=None):
    await asyncio.sleep(60)

async def main():
    base = "https://api.example.com/v1"
    async with tracing.run_span("run unit", job_id="j", unit="all"):
        await tracing.traced_sender(answer, base)("/responses", b"{}")
        try:
            await tracing.traced_sender(refuse, base)("/responses", b"{}")
        except RateLimited:
            pass
        hanging = asyncio.create_task(tracing.traced_sender(hang, base)("/responses", b"{}"))
        await asyncio.sleep(0.05)
    hanging.cancel()  # the run ended with this call still open

asyncio.run(main())
"""


def test_api_spans_carry_the_status_and_a_call_still_open_when_its_run_ends_is_closed_with_it(
    daemon: socket.socket,
) -> None:
    # Given tracing on in Lambda's environment, and the engine's sender wrapped
    address = "{}:{}".format(*daemon.getsockname())
    env = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(ROOT),
        "_X_AMZN_TRACE_ID": TRACE_HEADER,
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_DAEMON_ADDRESS": address,
    }

    # When a run makes a call answered, a call refused with a 429, and one still waiting as the run ends
    subprocess.run([sys.executable, "-c", SENDER_SCRIPT], env=env, check=True, cwd=ROOT, timeout=60)
    entities = received(daemon)

    # Then the run's span is sent all the same, with a span for each call under it
    (run,) = [e for e in entities if e["name"] == "## run unit"]
    assert run["annotations"] == {"job_id": "j", "unit": "all"}
    calls = [e for e in entities if e.get("parent_id") == run["id"]]
    assert [c["name"] for c in calls] == ["api.example.com"] * 3
    answered, refused, waiting = sorted(calls, key=lambda c: c["start_time"])
    assert answered["http"] == {
        "request": {"method": "POST", "url": "https://api.example.com/v1/responses"},
        "response": {"status": 200},
    }
    assert refused["http"]["response"]["status"] == 429
    assert refused["throttle"] is True
    assert refused["cause"]["exceptions"][0]["type"] == "RateLimited"
    assert "response" not in waiting["http"]  # closed by its run's end, never answered
    assert waiting["end_time"] <= run["end_time"]
