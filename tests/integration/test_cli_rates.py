"""What the CLI's figures count, read while the function runs: ``sent`` (requests the API received,
not those queued), the rate of a fast job's last ``--wait`` line, and the rate after a redrive
(running time only, not the idle time between the runs)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from promptdrop.records import PROGRESS_IDLE_S

from tests.integration.conftest import Pipeline
from tests.integration.test_cli import Cli, _wait_for, cli, event_source, slow_cli, write_file

__all__ = ["cli", "slow_cli"]  # the fixtures, shared with test_cli


def test_sent_counts_the_requests_the_api_received_not_those_queued(
    slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path
) -> None:
    # Given a 160-line file run 8 at a time against an API answering in 100 ms (the dispatcher holds
    # up to twice that many admitted, the rest queued behind the 8 in flight)
    p, cli = slow_pipeline, slow_cli
    path = write_file(tmp_path, "sent.jsonl", [json.dumps({"prompt": f"sent {i}"}) for i in range(160)])
    job_id = cli.json("submit", str(path))[1]["job_id"]
    polls: list[tuple[int, int]] = []  # (sent as status showed it, requests the API had received after)
    with event_source(p):

        def ended() -> bool:
            code, out, _ = cli("status", job_id, "--json")
            if code != 0:
                return False
            job = json.loads(out)
            polls.append((job["progress_sent"], p.prompts_seen()))
            return bool(job["status"] != "RUNNING")

        _wait_for(ended)

    # Then whenever status read it, sent was at most what the API had received (never the queued ones)
    assert all(sent <= received for sent, received in polls), polls
    assert any(0 < sent < 160 for sent, _ in polls), polls
    # and at the end, every request sent once, as the API counted them
    final = cli.json("status", job_id)[1]
    assert final["progress_sent"] == p.prompts_seen() == 160


def test_the_last_wait_line_of_a_fast_job_shows_its_rate(cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    # Given a 20-line file the fake API answers at once
    path = write_file(tmp_path, "fast.jsonl", [json.dumps({"prompt": f"fast {i}"}) for i in range(20)])
    with event_source(pipeline):
        # When it is submitted and waited for
        code, _, err = cli("submit", str(path), "--wait", "--timeout", "60", "--interval", "0.2")
    assert code == 0, err

    # Then the last progress line shows the job done at a rate above zero (not "0.0/s", not "-")
    last = err.strip().splitlines()[-1]
    found = re.match(r"SUCCEEDED +20/20 +([\d,.]+)/s +ETA -", last)
    assert found is not None, last
    assert float(found[1].replace(",", "")) > 0, last


def test_after_a_redrive_the_rate_counts_running_time_only(
    slow_cli: Cli, slow_pipeline: Pipeline, tmp_path: Path
) -> None:
    p, cli = slow_pipeline, slow_cli
    # Given a 160-line job cancelled once it has begun answering
    path = write_file(tmp_path, "paused.jsonl", [json.dumps({"prompt": f"paused {i}"}) for i in range(160)])
    with event_source(p):
        job_id = cli.json("submit", str(path))[1]["job_id"]
        _wait_for(lambda: p.prompts_seen() >= 16)
        assert cli("cancel", job_id)[0] == 0
        _wait_for(lambda: p.items(job_id)["JOB"]["status"] != "RUNNING")
    stopped = cli.json("status", job_id)[1]
    assert stopped["status"] == "CANCELLED"

    # When it is resumed after an idle spell longer than its runs' reports are apart
    time.sleep(PROGRESS_IDLE_S + 1)
    redriven_at = time.time()
    assert cli.json("redrive", "--job", job_id)[1]["moved"] == 1
    p.drain()

    # Then it finished, and its progress window — the rate status shows — holds the resumed run alone
    job: dict[str, Any] = cli.json("status", job_id)[1]
    assert (job["status"], job["succeeded"]) == ("SUCCEEDED", 160)
    window = job["progress_window"]
    assert len(window) >= 2
    assert min(at for at, _ in window) >= redriven_at, (window, redriven_at)
    assert window[0][1] == stopped["progress_succeeded"] + stopped["progress_failed"]  # where the last run left off
    assert job["derived"]["recent_rate_per_s"] > 0
