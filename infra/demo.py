"""``make demo``: the whole pipeline on this machine, no AWS account and no OpenAI key needed.

1. starts a moto server and creates the resources ``template.yaml`` declares (bucket with its
   S3 → SQS notification, work queue, dead-letter queue, table, secret);
2. starts the local OpenAI-compatible fake API — or, with ``OPENAI_API_KEY`` set, uses the
   real API (the key goes into the stack's secret, as in AWS);
3. uploads the sample prompt files (``infra/samples``: every format, a .csv with a prompt
   template, one malformed line, one transient and one permanent API fault) to the input prefix;
4. plays Lambda's SQS event-source mapping: real SQS-shaped events into the real handler;
5. prints, per file, the job status, counts, tokens and where the outputs are, and what
   reached the dead-letter queue.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3

from infra.event_source import SqsEventSource
from infra.fake_openai import FakeOpenAIConfig, serve_in_thread
from infra.local_aws import LocalAws, deploy, start_moto, stop_moto

__all__ = ["main"]

SAMPLES = Path(__file__).parent / "samples"
# A .csv of data rows takes its prompt template from the upload's metadata (its job header).
TEMPLATES = {"city-guides.csv": "In one sentence, what should a first-time visitor see in {city}?"}
LOCAL_KEY = "sk-local-demo"


@contextlib.contextmanager
def _model(real_key: str | None, latency_ms: float) -> Iterator[tuple[str | None, str]]:
    """(base URL or None for the real API, the key to store in the secret)."""
    if real_key:
        yield os.environ.get("OPENAI_BASE_URL"), real_key
        return
    config = FakeOpenAIConfig(latency_ms=latency_ms, jitter_ms=latency_ms / 4, require_api_key=LOCAL_KEY)
    with serve_in_thread(config) as server:
        yield server.base_url, LOCAL_KEY


def _set_env(stack: LocalAws, base_url: str | None, verbose: bool) -> None:
    env = stack.function_env(
        POWERTOOLS_LOG_LEVEL="INFO" if verbose else "WARNING",
        POWERTOOLS_METRICS_DISABLED="false" if verbose else "true",
        **({"OPENAI_BASE_URL": base_url} if base_url else {}),
    )
    os.environ.update(env)
    os.environ.pop("OPENAI_API_KEY", None)  # the handler reads the key from the stack's secret


def _dlq(stack: LocalAws) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=stack.region, endpoint_url=stack.endpoint)
    with contextlib.closing(sqs):
        messages: list[dict[str, Any]] = []
        while batch := sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10).get("Messages"):
            messages += [json.loads(m["Body"]) for m in batch]
            sqs.delete_message_batch(
                QueueUrl=stack.dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return messages


def _print_report(stack: LocalAws, s3: Any, keys: list[str], elapsed: float, model: str) -> None:
    print(f"\npromptdrop demo: {len(keys)} files through the real handler ({model}) in {elapsed:.1f} s")
    print(f"outputs under s3://{stack.bucket}/{stack.output_prefix}<input key>\n")
    header = f"{'input':<30} {'status':<10} {'ok':>3} {'fail':>4} {'tokens':>6} {'cost $':>9}  output files"
    print(header)
    print("-" * len(header))
    for key in keys:
        base = f"{stack.output_prefix}{key}"
        summary = json.loads(s3.get_object(Bucket=stack.bucket, Key=f"{base}.summary.json")["Body"].read())
        counts, tokens = summary["counts"], summary["tokens"]
        suffixes = " ".join(sorted(url.rsplit(base, 1)[-1] for url in summary["outputs"].values()))
        cost = summary["estimated_cost_usd"]
        print(
            f"{key:<30} {summary['status']:<10} {counts['succeeded']:>3} {counts['failed']:>4} "
            f"{tokens['total']:>6} {f'{cost:.6f}' if cost is not None else '-':>9}  {suffixes}"
        )
    dead = _dlq(stack)
    print(f"\ndead-letter queue: {len(dead)} message(s), each with its reason")
    for message in sorted(dead, key=lambda m: (m["key"], m.get("line") or 0)):
        where = f"{message['key']} line {message['line']}" if message["kind"] == "prompt_failure" else message["key"]
        print(f"  {message['kind']:<15} {where:<36} {message['error']['code']}: {message['error']['message'][:60]}")
    print(f"\nDynamoDB table {stack.table}: one job item per file, one item per request.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--latency-ms", type=float, default=150.0, help="fake OpenAI API latency")
    parser.add_argument("--verbose", action="store_true", help="show the handler's JSON logs and EMF metrics")
    args = parser.parse_args(argv)

    real_key = os.environ.get("OPENAI_API_KEY")
    started = time.monotonic()
    server, endpoint = start_moto()
    try:
        stack = deploy(endpoint)
        with _model(real_key, args.latency_ms) as (base_url, api_key):
            _set_env(stack, base_url, args.verbose)  # local credentials and endpoint for every client below
            secrets = boto3.client("secretsmanager", region_name=stack.region, endpoint_url=endpoint)
            with contextlib.closing(secrets):
                secrets.put_secret_value(SecretId=stack.secret_arn, SecretString=api_key)
            from promptdrop import runtime  # after the environment is set: nothing reads it at import anyway
            from promptdrop.handler import lambda_handler

            s3 = boto3.client("s3", region_name=stack.region, endpoint_url=endpoint)
            with contextlib.closing(s3):
                keys = []
                for path in sorted(SAMPLES.iterdir()):
                    key = f"{stack.input_prefix}{path.name}"
                    template = TEMPLATES.get(path.name)
                    metadata = {"promptdrop-template": template} if template else {}
                    s3.put_object(Bucket=stack.bucket, Key=key, Body=path.read_bytes(), Metadata=metadata)
                    keys.append(key)
                try:
                    with SqsEventSource.for_stack(stack) as event_source:
                        event_source.drain(lambda_handler, wait_s=0)
                finally:
                    runtime.shutdown()
                model = "the real OpenAI API" if real_key else f"fake OpenAI API, {args.latency_ms:.0f} ms latency"
                _print_report(stack, s3, keys, time.monotonic() - started, model)
    finally:
        stop_moto(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
