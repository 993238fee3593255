"""``promptdrop``: operator commands. ``promptdrop redrive`` moves dead-letter messages back to work.

Every message in the dead-letter queue can be redriven: ``prompt_failure`` (the request runs
again and is merged into its job's outputs), ``file_failure`` (the file runs again, skipping what
already has an answer) and work messages that dead-lettered after five receives (S3
notifications, shards, continuations). SQS's own redrive does the same for messages that came
from the work queue; this command also moves the ones the function sent to the DLQ itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import boto3

from .messages import KINDS

__all__ = ["main", "redrive"]


def _kind(body: str) -> str:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return "unparseable"
    if isinstance(parsed, dict):
        return str(parsed.get("kind") or ("s3_notification" if "Records" in parsed else "other"))
    return "other"


def redrive(
    sqs: Any, *, dlq_url: str, work_queue_url: str, limit: int | None = None, kinds: set[str] | None = None
) -> Counter[str]:
    """Move up to ``limit`` messages (of ``kinds``, or all) from the DLQ to the work queue.

    A message is deleted from the DLQ only after the work queue accepted it; others become
    visible again when their visibility timeout ends. Returns the count moved, by kind.
    """
    moved: Counter[str] = Counter()
    while limit is None or sum(moved.values()) < limit:
        want = 10 if limit is None else min(10, limit - sum(moved.values()))
        batch = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=want, WaitTimeSeconds=1).get("Messages", [])
        if not batch:
            break
        chosen = [m for m in batch if kinds is None or _kind(m["Body"]) in kinds]
        if not chosen:
            break  # only other kinds are left in view
        sent = sqs.send_message_batch(
            QueueUrl=work_queue_url,
            Entries=[{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(chosen)],
        )
        ok = {int(entry["Id"]) for entry in sent.get("Successful", [])}
        accepted = [m for i, m in enumerate(chosen) if i in ok]
        if accepted:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(accepted)],
            )
        moved.update(_kind(m["Body"]) for m in accepted)
        if len(accepted) < len(chosen):
            failed = sent.get("Failed", [])
            raise RuntimeError(f"the work queue refused {len(failed)} message(s): {failed[:3]}")
    return moved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="promptdrop", description="promptdrop operator commands")
    commands = parser.add_subparsers(dest="command", required=True)
    move = commands.add_parser("redrive", help="move dead-letter messages back to the work queue")
    move.add_argument("--dlq-url", default=os.environ.get("PROMPTDROP_DLQ_URL"), help="default: $PROMPTDROP_DLQ_URL")
    move.add_argument(
        "--work-queue-url",
        default=os.environ.get("PROMPTDROP_WORK_QUEUE_URL"),
        help="default: $PROMPTDROP_WORK_QUEUE_URL",
    )
    move.add_argument("--limit", type=int, default=None, help="move at most this many messages")
    move.add_argument(
        "--kind",
        action="append",
        choices=[*KINDS, "s3_notification"],
        help="only these kinds (repeatable); default: all",
    )
    args = parser.parse_args(argv)
    if not args.dlq_url or not args.work_queue_url:
        parser.error("give --dlq-url and --work-queue-url (or set PROMPTDROP_DLQ_URL and PROMPTDROP_WORK_QUEUE_URL)")
    sqs = boto3.client("sqs")
    try:
        moved = redrive(
            sqs,
            dlq_url=args.dlq_url,
            work_queue_url=args.work_queue_url,
            limit=args.limit,
            kinds=set(args.kind) if args.kind else None,
        )
    finally:
        sqs.close()
    total = sum(moved.values())
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(moved.items()))
    print(f"moved {total} message(s) to the work queue" + (f": {detail}" if detail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
