"""``promptdrop redrive``: move dead-letter messages back to the work queue.

Every message in the dead-letter queue can be redriven: ``prompt_failure`` (the request runs
again and is merged into its job's outputs), ``file_failure`` (the file runs again, skipping what
already has an answer: a job stopped by a bad key, or cancelled) and work messages that
dead-lettered after five receives (S3 notifications, shards, continuations). SQS's own redrive
does the same for messages that came from the work queue; this command also moves the ones the
function sent to the DLQ itself, and can pick them by kind or by job.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from typing import Any

from ..messages import KINDS
from .errors import CliError, ExitCode
from .jobstore import JOB_ID_LENGTH, JobStore
from .resources import Clients, add_resource_flags, resolve
from .view import View

__all__ = ["add_parser", "redrive", "run"]


def _describe(body: str) -> tuple[str, str | None]:
    """A message's kind (``s3_notification`` for S3's own) and job id, read leniently."""
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return "unparseable", None
    if not isinstance(parsed, dict):
        return "other", None
    kind = str(parsed.get("kind") or ("s3_notification" if "Records" in parsed else "other"))
    job_id = parsed.get("job_id")
    return kind, str(job_id) if job_id is not None else None


def redrive(
    sqs: Any,
    *,
    dlq_url: str,
    work_queue_url: str,
    limit: int | None = None,
    kinds: set[str] | None = None,
    job_id: str | None = None,
) -> Counter[str]:
    """Move up to ``limit`` messages (of ``kinds`` and of ``job_id``, or all) from the DLQ to the work queue.

    Only the messages already in the DLQ when it starts: a redriven prompt that fails again while
    this runs (the function is live) comes back as a new message, and moving it again would loop
    until the function stops failing. A message is deleted from the DLQ only after the work queue
    accepted it. Messages received but not moved are made visible again at the end (held meanwhile,
    so each is looked at once). Returns the count moved, by kind.
    """
    moved: Counter[str] = Counter()
    held: dict[str, str] = {}  # message id -> receipt handle of the ones not moved
    picking = kinds is not None or job_id is not None
    started_ms: int | None = None
    asked_ms = int(time.time() * 1000)
    try:
        while limit is None or sum(moved.values()) < limit:
            left = None if limit is None else limit - sum(moved.values())
            want = 10 if picking or left is None else min(10, left)
            response = sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=want,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            if started_ms is None:
                started_ms = _sqs_clock(response, asked_ms)
            batch = response.get("Messages", [])
            fresh = [m for m in batch if m["MessageId"] not in held]
            if not fresh:
                break  # empty, or only messages looked at already came back
            older = [m for m in fresh if int(m.get("Attributes", {}).get("SentTimestamp", 0)) < started_ms]
            chosen = [m for m in older if _wanted(m["Body"], kinds, job_id)][:left]
            taken = {m["MessageId"] for m in chosen}
            held |= {m["MessageId"]: m["ReceiptHandle"] for m in fresh if m["MessageId"] not in taken}
            if chosen:
                moved.update(_move(sqs, chosen, dlq_url=dlq_url, work_queue_url=work_queue_url))
    finally:
        _release(sqs, dlq_url, held)
    return moved


def _sqs_clock(response: dict[str, Any], local_ms: int) -> int:
    """``local_ms`` on SQS's clock (what ``SentTimestamp`` is on): this machine's, unless the
    response's ``Date`` shows it off by more than the header's one-second resolution allows."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        server_ms = int(parsedate_to_datetime(date).timestamp() * 1000) if date else None
    except (TypeError, ValueError):
        server_ms = None
    return server_ms if server_ms is not None and abs(server_ms - local_ms) > 2000 else local_ms


def _wanted(body: str, kinds: set[str] | None, job_id: str | None) -> bool:
    kind, of_job = _describe(body)
    return (kinds is None or kind in kinds) and (job_id is None or of_job == job_id)


def _move(sqs: Any, chosen: list[dict[str, Any]], *, dlq_url: str, work_queue_url: str) -> Counter[str]:
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
    if len(accepted) < len(chosen):
        failed = sent.get("Failed", [])
        raise RuntimeError(f"the work queue refused {len(failed)} message(s): {failed[:3]}")
    return Counter(_describe(m["Body"])[0] for m in accepted)


def _release(sqs: Any, dlq_url: str, held: dict[str, str]) -> None:
    handles = list(held.values())
    for start in range(0, len(handles), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(handles[start : start + 10])
            ],
        )


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    move = commands.add_parser(
        "redrive",
        parents=[parent],
        help="move dead-letter messages back to the work queue",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    move.add_argument("--limit", type=int, default=None, help="move at most this many messages")
    move.add_argument(
        "--kind",
        action="append",
        choices=[*KINDS, "s3_notification"],
        help="only these kinds (repeatable); default: all",
    )
    move.add_argument(
        "--job", metavar="JOB_ID", help="only the messages of this job (e.g. a cancelled one); a unique prefix will do"
    )
    add_resource_flags(move, "dlq_url", "work_queue_url", "table")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    resources = resolve(args, aws)
    dlq_url, work_queue_url = resources.need("dlq_url"), resources.need("work_queue_url")
    job_id = args.job
    if job_id is not None and len(job_id) < JOB_ID_LENGTH:  # a prefix: the jobs table knows the whole id
        job_id = JobStore(aws, resources).find_id(job_id)
        if job_id is None:
            raise CliError(f"no job id starts with {args.job!r} (a job id, or 8 of its characters at least)")
    moved = redrive(
        aws.sqs,
        dlq_url=dlq_url,
        work_queue_url=work_queue_url,
        limit=args.limit,
        kinds=set(args.kind) if args.kind else None,
        job_id=job_id,
    )
    total = sum(moved.values())
    if view.json_mode:
        view.json({"moved": total, "by_kind": dict(sorted(moved.items()))})
        return ExitCode.OK
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(moved.items()))
    view.line(f"moved {total} message(s) to the work queue" + (f": {detail}" if detail else ""))
    return ExitCode.OK
