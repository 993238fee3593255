"""``promptdrop local`` as a user runs it: started in its own process, fed a file with ``submit`` and one
copied in directly (as ``aws s3 cp`` does), shown by ``status``, stopped with Ctrl-C — and started again,
holding what it held."""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def running_local(cwd: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``promptdrop local --json FLAGS`` in a process of its own, with none of the caller's AWS or
    promptdrop environment (killed if the block leaves it running)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTDROP_", "AWS_", "OPENAI_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptdrop.cli", "local", "--port", "0", "--latency-ms", "0", "--json", *flags],
        cwd=cwd,  # not the checkout: infra/ is found from the package's own path
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


def _ctrl_c(process: subprocess.Popen[str], signum: int = signal.SIGINT) -> str:
    """Stop it as a user does (Ctrl-C; or a service manager: SIGTERM); what it said on stderr."""
    process.send_signal(signum)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    return process.stderr.read()


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    with running_local(tmp_path, "--state-dir", str(tmp_path / "state")) as running:
        yield running


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
    assert "promptdrop local: stopped" in _ctrl_c(process)


def _export(monkeypatch: pytest.MonkeyPatch, ready: dict[str, Any]) -> None:
    for name, value in ready["env"].items():
        monkeypatch.setenv(name, value)


def _names(ready: dict[str, Any]) -> dict[str, str]:
    """The exports that name the stack's resources, the endpoint left out (it moves with --port 0)."""
    return {k: v.replace(ready["endpoint"], "") for k, v in ready["env"].items() if k.startswith("PROMPTDROP_")}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_local_keeps_its_names_and_data_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    path = tmp_path / "kept.jsonl"
    path.write_text(json.dumps({"prompt": "keep me"}) + "\n" + json.dumps({"prompt": "refused [[fail:400]]"}) + "\n")
    # Given a local stack that ran a job (one answer, one dead letter), then was stopped (SIGTERM, as
    # `kill` or a service manager stops it; Ctrl-C below)
    with running_local(tmp_path, "--state-dir", str(state)) as (process, first):
        assert (first["state_dir"], first["kept"]) == (str(state), False)
        _export(monkeypatch, first)
        code, out, err = _cli(capsys, "submit", str(path), "--wait", "--timeout", "60", "--interval", "0.2", "--json")
        assert code == 1, err  # PARTIAL: one line refused
        job_id = json.loads(out)["job"]["job_id"]
        assert "promptdrop local: stopped" in _ctrl_c(process, signal.SIGTERM)
    # then the key it stored in the stack's secret is not on disk
    assert sorted(p.name for p in state.iterdir()) == ["local-state.pickle"]
    assert not any(b"sk-local" in p.read_bytes() for p in state.iterdir())

    # When it starts again from the same state directory
    with running_local(tmp_path, "--state-dir", str(state)) as (process, again):
        # Then it has the same names (the endpoint moves only with the port: --port 0 here)
        assert again["kept"] is True
        for name in ("bucket", "table", "input_prefix", "output_prefix"):
            assert again[name] == first[name], name
        assert _names(again) == _names(first)
        _export(monkeypatch, again)
        # and its data: the job, its answers, its dead letter
        code, out, err = _cli(capsys, "status", job_id[:8], "--json")
        assert code == 0, err
        assert (json.loads(out)["status"], json.loads(out)["succeeded"]) == ("PARTIAL", 1)
        code, out, _ = _cli(capsys, "results", job_id)
        assert [
            json.loads(line)["response"]["body"]["choices"][0]["message"]["content"] for line in out.splitlines()
        ] == ["Echo: keep me"]
        code, out, err = _cli(capsys, "redrive", "--job", job_id, "--json")
        assert (code, json.loads(out)["by_kind"]) == (0, {"prompt_failure": 1}), err
        # and it runs a new file as before (S3's notification, the function, the key in its secret)
        second = tmp_path / "after.txt"
        second.write_text("Still there?")
        code, out, err = _cli(capsys, "submit", str(second), "--wait", "--timeout", "60", "--interval", "0.2", "--json")
        assert code == 0, err
        assert json.loads(out)["summary"]["counts"] == {"total": 1, "succeeded": 1, "failed": 0}
        # When an export is stale (a table of another run), the CLI says which names it used
        monkeypatch.setenv("PROMPTDROP_TABLE", "promptdrop-local-JobsTable-GONE")
        code, _, err = _cli(capsys, "status")
        assert code == 2
        assert "ResourceNotFoundException" in err
        assert "is an export stale? from the environment: AWS_ENDPOINT_URL=" in err
        assert "PROMPTDROP_TABLE=promptdrop-local-JobsTable-GONE" in err
        assert f"promptdrop local: loading the state kept in {state} (" in _ctrl_c(process)

    # When the saved state is not one this moto can load, it is set aside, said, and the stack starts
    # afresh: under the same names (the exports still good), without the data
    with (state / "local-state.pickle").open("rb") as file:  # its header (a dict), then moto's backends
        header, backends = pickle.load(file), file.read()
    (state / "local-state.pickle").write_bytes(pickle.dumps(header | {"moto": "0.0.1"}) + backends)
    with running_local(tmp_path, "--state-dir", str(state)) as (process, fresh):
        assert fresh["kept"] is False
        assert _names(fresh) == _names(first)
        _export(monkeypatch, fresh)
        code, out, err = _cli(capsys, "status", "--json")
        assert (code, json.loads(out)) == (0, []), err
        said = _ctrl_c(process)
    assert "was not loaded (it was made by moto 0.0.1" in said
    (aside,) = state.glob("local-state.pickle.set-aside-*")
    assert aside.read_bytes().endswith(backends)
