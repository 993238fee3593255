"""S3 keys are at most 1,024 bytes: an input key near the limit still gets outputs S3 accepts."""

from __future__ import annotations

import hashlib
import json

from tests.integration.conftest import Pipeline

S3_KEY_MAX_BYTES = 1024


def test_an_input_key_near_s3s_limit_gets_hashed_output_keys_and_the_summary_names_it(pipeline: Pipeline) -> None:
    # Given an upload whose key is 1,013 bytes (results/ + the key + .errors.jsonl would be 1,034)
    key = "inputs/" + "é" * 500 + ".jsonl"
    assert len(key.encode()) == 1013
    pipeline.put(key, "\n".join(json.dumps({"prompt": p}) for p in ("long key", "[[fail:400]] long key")))

    # When it runs
    pipeline.drain()

    # Then every output key fits S3's limit, under one hashed name, and the summary says whose it is
    base = f"results/_long-keys/{hashlib.sha256(key.encode()).hexdigest()}"
    listed = pipeline.s3.list_objects_v2(Bucket=pipeline.bucket, Prefix="results/")["Contents"]
    names = sorted(obj["Key"] for obj in listed)
    assert names == [base + ".errors.jsonl", base + ".out.jsonl", base + ".summary.json"]
    assert all(len(name.encode()) <= S3_KEY_MAX_BYTES for name in names)
    summary = json.loads(pipeline.s3.get_object(Bucket=pipeline.bucket, Key=base + ".summary.json")["Body"].read())
    assert (summary["input"]["key"], summary["status"], summary["counts"]["total"]) == (key, "PARTIAL", 2)
    (letter,) = [m for m in pipeline.dlq() if m["kind"] == "prompt_failure"]
    assert letter["key"] == key
