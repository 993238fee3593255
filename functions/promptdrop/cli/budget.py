"""``promptdrop budget KEY | JOB_ID [--usd N] [--tokens N] [--max-requests N]``: set a job's budget.

The limits are written on the job item, where they win over the upload's metadata and the
function's environment (the upload's metadata cannot change: a new upload of the same key is a
new job, which would pay for every line again). A job that stopped ``BUDGET_EXCEEDED`` resumes
with ``promptdrop redrive --job JOB_ID``: every line with an answer is skipped. Set on a running
job, the new limits apply from its next run (a continuation, a shard, a redrive).
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import CliError
from .jobstore import REF_HELP, JobStore
from .resources import Clients, add_resource_flags, resolve
from .view import View

__all__ = ["add_parser", "run"]


def _positive(kind: type[int] | type[Decimal]) -> Any:
    def parse(text: str) -> int | Decimal:
        try:
            value = kind(text)
        except (ValueError, InvalidOperation):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or (isinstance(value, Decimal) and not value.is_finite()):
            raise argparse.ArgumentTypeError(f"{text!r}: a limit must be above 0")
        return value

    return parse


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "budget",
        parents=[parent],
        help="set a job's budget (dollars, tokens, requests); then redrive it to resume",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("ref", metavar="KEY | JOB_ID", help=REF_HELP)
    cmd.add_argument("--usd", type=_positive(Decimal), help="the file's budget in US dollars")
    cmd.add_argument("--tokens", type=_positive(int), help="the file's budget in tokens (prompt + completion)")
    cmd.add_argument("--max-requests", type=_positive(int), help="requests the file may send")
    add_resource_flags(cmd, "table", "bucket")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    limits = {"budget_usd": args.usd, "budget_tokens": args.tokens, "max_requests": args.max_requests}
    limits = {name: value for name, value in limits.items() if value is not None}
    if not limits:
        raise CliError("say which limit to set: --usd N, --tokens N and/or --max-requests N")
    store = JobStore(aws, resolve(args, aws))
    job = store.set_budget(store.locate(args.ref).job_id, limits)
    resume = f"promptdrop redrive --job {job.job_id}"
    shown = {name: str(value) for name, value in limits.items()}
    if view.json_mode:
        view.json({"job_id": job.job_id, "status": job.status, "limits": shown, "resume": resume})
        return 0
    view.line(
        f"job {job.job_id} ({job.uri}) is {job.status}; its limits now: "
        + ", ".join(f"{name} {value}" for name, value in shown.items())
    )
    if job.status == "BUDGET_EXCEEDED":
        view.line(f"resume it, paying nothing twice: {resume}")
    return 0
