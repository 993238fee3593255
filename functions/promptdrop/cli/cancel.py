"""``promptdrop cancel KEY | JOB_ID``: ask a running job to stop.

Sets ``cancel_requested_at`` on the job item, only while the job is RUNNING (a conditional
update: a finished job is refused). The invocations running it notice within seconds, stop
sending, let the calls in flight finish, write the outputs with what was done and end the job
CANCELLED, dead-lettering a ``file_failure`` (code ``cancelled``). ``promptdrop redrive --job
JOB_ID`` resumes it later: what has an answer is skipped, so nothing is paid for twice.

A job waiting for the provider's Batch API (batch mode) is checked at once: its units' check
messages are sent again, undelayed (``--work-queue-url``, else the stack's or the environment's), so
its batches are cancelled within seconds — what they finished is merged, paid once.
"""

from __future__ import annotations

import argparse
from typing import Any

from .batches import check_now
from .errors import ExitCode
from .figures import now_iso
from .jobstore import REF_HELP, CancelOutcome, JobStore
from .resources import Clients, add_resource_flags, resolve
from .view import View

__all__ = ["add_parser", "run"]

NEXT = (
    "what happens next: the invocations running it stop sending within seconds, let the calls in flight "
    "finish, write the outputs with what was done and mark the job CANCELLED; a file_failure (code "
    "cancelled) goes to the dead-letter queue."
)


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "cancel",
        parents=[parent],
        help="stop a running job (in-flight calls finish; resume it later with redrive)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("ref", metavar="KEY | JOB_ID", help=REF_HELP)
    add_resource_flags(cmd, "table", "bucket", "work_queue_url")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    resources = resolve(args, aws)
    store = JobStore(aws, resources)
    job = store.locate(args.ref)
    outcome, job = store.request_cancel(job.job_id, now_iso())
    checked = 0
    if outcome is not CancelOutcome.FINISHED and resources.work_queue_url:
        checked = check_now(store, aws, job, resources.work_queue_url)  # batch mode: its batches stopped now
    resume = f"promptdrop redrive --job {job.job_id}"
    code = ExitCode.NOT_ALL_SUCCEEDED if outcome is CancelOutcome.FINISHED else ExitCode.OK
    if view.json_mode:
        view.json(
            {
                "job_id": job.job_id,
                "outcome": str(outcome),
                "status": job.status,
                "cancel_requested_at": job.cancel_requested_at,
                "resume": resume if outcome is not CancelOutcome.FINISHED else None,
                "batch_units_checked": checked,
            }
        )
        return code
    if outcome is CancelOutcome.FINISHED:
        view.line(f"job {job.job_id} ({job.uri}) is already {job.status}: nothing to cancel")
        return code
    if outcome is CancelOutcome.ALREADY_REQUESTED:
        view.line(f"cancel of job {job.job_id} ({job.uri}) was already requested at {job.cancel_requested_at}")
    else:
        view.line(f"cancel requested for job {job.job_id} ({job.uri}) at {job.cancel_requested_at}")
    view.line(NEXT)
    if checked:
        view.line(
            f"its provider batches ({checked} unit(s) in batch mode) are cancelled at once; what they finished is kept"
        )
    view.line(f"watch it: promptdrop status {job.job_id}")
    view.line(f"resume it later, paying nothing twice: {resume}")
    return code
