"""``promptdrop local`` as a user runs it: started in its own process, fed a file with ``submit`` and one
copied in directly (as ``aws s3 cp`` does), shown by ``status``, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from promptdrop.cli import main

STARTUP_S = 90.0


def _read_ready(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The JSON ``local --json`` prints once the stack takes files (read with a bounded wait)."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
    text, deadline = "", time.monotonic() + STARTUP_S
    while True:
        try:
            text += lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"promptdrop local printed no stack within {STARTUP_S:.0f}s: {text!r}")
        try:
            ready: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:
            continue
        return ready


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTDROP_", "AWS_", "OPENAI_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptdrop.cli", "local", "--port", "0", "--latency-ms", "0", "--json"],
        cwd=tmp_path,  # not the checkout: infra/ is found from the package's own path
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, _read_ready(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_local_serves_files_until_ctrl_c(
    local_stack: tuple[subprocess.Popen[str], dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, ready = local_stack
    # Given the exports local printed, pasted into the user's shell
    assert ready["env"]["AWS_ENDPOINT_URL"] == ready["endpoint"]
    assert ready["env"]["PROMPTDROP_BUCKET"] == ready["bucket"]
    for name, value in ready["env"].items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "hello.jsonl"
    path.write_text(json.dumps({"prompt": "hello"}) + "\n" + json.dumps({"prompt": "again"}) + "\n")

    # When a file is submitted and waited for
    capsys.readouterr()
    assert main(["submit", str(path), "--wait", "--timeout", "60", "--interval", "0.2", "--json"]) == 0
    submitted = json.loads(capsys.readouterr().out)

    # Then the real handler ran it, as in AWS
    assert submitted["summary"]["counts"] == {"total": 2, "succeeded": 2, "failed": 0}

    # and a file copied in directly (what `aws s3 cp` does) runs too, and status shows it
    s3 = boto3.client("s3")
    s3.put_object(Bucket=ready["bucket"], Key="inputs/copied.txt", Body=b"Say hi.")
    s3.close()
    deadline = time.monotonic() + 60
    while True:
        code = main(["status", "inputs/copied.txt", "--json"])
        out = capsys.readouterr().out
        if code == 0 and json.loads(out)["status"] != "RUNNING":
            break
        assert time.monotonic() < deadline, "the copied file's job did not finish"
        time.sleep(0.2)
    assert json.loads(out)["status"] == "SUCCEEDED"
    capsys.readouterr()
    assert main(["results", "inputs/copied.txt"]) == 0
    (answer,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert answer["response"]["body"]["choices"][0]["message"]["content"] == "Echo: Say hi."

    # When Ctrl-C is pressed, local stops cleanly
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    assert "promptdrop local: stopped" in process.stderr.read()
