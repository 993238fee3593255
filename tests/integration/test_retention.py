"""Request items carry the table's TTL attribute when PROMPTDROP_REQUEST_TTL_DAYS asks for it."""

from __future__ import annotations

import json
import time

from tests.integration.conftest import Pipeline


def test_request_items_expire_the_configured_days_after_they_are_written(pipeline: Pipeline) -> None:
    pipeline.configure(PROMPTDROP_REQUEST_TTL_DAYS="7")
    key = "inputs/ttl.jsonl"
    pipeline.put(key, "\n".join(json.dumps({"prompt": p}) for p in ("kept a week", "[[fail:400]] also a week")))
    before = int(time.time())
    pipeline.drain()
    items = pipeline.items(pipeline.summary(key)["job_id"])
    requests = {sk: item for sk, item in items.items() if sk.startswith("REQ#")}
    assert len(requests) == 2  # the answer and the failure
    week = 7 * 86_400
    assert all(before + week <= int(item["expires_at"]) <= int(time.time()) + week for item in requests.values())
    assert "expires_at" not in items["JOB"]  # the job item stays: it is how the job is found


def test_without_a_ttl_request_items_are_kept(pipeline: Pipeline) -> None:
    key = "inputs/kept.jsonl"
    pipeline.put(key, json.dumps({"prompt": "kept"}))
    pipeline.drain()
    items = pipeline.items(pipeline.summary(key)["job_id"])
    assert all("expires_at" not in item for item in items.values())
