"""``promptdrop status [KEY | JOB_ID]``: one job in detail, or the recent jobs as a table.

A running job shows its live progress (the job item's progress_*, refreshed every few seconds
by every unit that runs): done out of the file's line count, its rate over about the last 30 s of
running time and the time left at that rate; a finished job its final counts and its failures by
code (read from its .errors.jsonl). JOB_ID may be any unique prefix of 8 characters or more.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ..jobs.cost_guard import BUDGET_METADATA
from ..records import PROGRESS_IDLE_S, PROGRESS_WINDOW_S, JobStatus
from .batches import provider_batches
from .errors import ExitCode
from .figures import ago, duration, money, number, parse_time, rate, seconds_between
from .jobstore import REF_HELP, Job, JobStore
from .resources import Clients, add_resource_flags, resolve
from .view import Column, View

__all__ = ["add_parser", "batch_rows", "describe", "detail_rows", "job_json", "progress_cells", "run"]


def job_json(job: Job, store: JobStore | None = None, *, failures: bool = True) -> dict[str, Any]:
    """The job item as ``--json`` prints it, plus what the CLI derives (rates, ETA, failures by code,
    the limits); ``failures=False`` (a list of jobs): nothing read beyond the job item."""
    prompt, completion = job.tokens
    value: dict[str, Any] = asdict(job)
    value["derived"] = {
        "done": job.done,
        "lines_left": job.lines_left,
        "succeeded": job.ok,
        "failed": job.not_ok,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": None if job.cost_usd is None else float(job.cost_usd),
        "recent_rate_per_s": job.recent_rate,
        "eta_s": job.eta_s,
        "failures_by_code": dict(store.failures_by_code(job)) if store is not None and failures else None,
        "provider_batches": provider_batches(store, job) if store is not None and failures else None,
        "limits": limits_of(job, store.header(job) if store is not None and failures else {}),
    }
    return value


def progress_cells(job: Job, now: datetime) -> tuple[str, str]:
    """What a running job's rate and ETA read: the recent rate, and the time left at it (or why not)."""
    speed, silent = job.recent_rate, seconds_between(job.updated_at, now.isoformat())
    if job.error:  # it ends early (the job item says why) and is writing its outputs
        eta = f"- (stopping: {job.error.get('code')}; writing the outputs)"
    elif job.line_count is None:
        eta = "- (line count unknown)"
    elif job.lines_left == 0:  # it ends once the outputs are written (seconds to minutes: the journal is read whole)
        eta = "- (all done: writing the outputs)"
    elif silent is not None and silent > PROGRESS_IDLE_S:  # a stalled run, or one waiting to be redelivered
        eta = f"- (no progress report for {duration(silent)})"
    elif not speed:
        eta = "- (no rate yet)"
    else:
        eta = duration(job.eta_s)
    return f"{rate(speed)} (last {PROGRESS_WINDOW_S:.0f} s)", eta


def describe(job: Job) -> str:
    """The status word, with a job's stop under way (its reason on the job item) or a pending cancel."""
    if job.final:
        return job.status
    if job.error:
        return f"{job.status} (stopping: {job.error.get('code')})"
    if job.cancel_requested_at:
        return f"{job.status} (cancel requested {job.cancel_requested_at})"
    return job.status


def detail_rows(
    job: Job, failures: Counter[str] | None, header: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The job in detail; ``header``: its upload's job header (the limits it carries), when read."""
    prompt, completion = job.tokens
    done = _progress_cell(job)
    # A running job's finished_at, if any, is an earlier run's end (a cancelled job redriven, say).
    elapsed = seconds_between(job.started_at, job.finished_at if job.final else datetime.now(UTC).isoformat())
    rows = [
        ("job", job.job_id),
        ("input", job.uri),
        ("status", describe(job)),
        ("started", job.started_at or "-"),
        ("finished" if job.final else "updated", (job.finished_at if job.final else job.updated_at) or "-"),
        ("elapsed", duration(elapsed)),
        ("requests", f"{done} done: {job.ok:,} succeeded, {job.not_ok:,} failed"),
    ]
    if not job.final:
        speed, eta = progress_cells(job, datetime.now(UTC))
        rows += [("sent", number(job.progress_sent)), ("rate", speed), ("ETA", eta)]
    rows += [
        ("tokens", f"{prompt:,} prompt + {completion:,} completion"),
        ("cost", f"{money(job.cost_usd)} (estimate)" if job.cost_usd is not None else "-"),
    ]
    budget = _budget_cell(job, header or {})
    if budget is not None:
        rows.append(("budget", budget))
    if job.units_total and job.units_total > 1:
        rows.append(("units", f"{job.units_done}/{job.units_total} shards done"))
    if failures:
        rows.append(("failures", ", ".join(f"{code} {n:,}" for code, n in failures.most_common())))
    if job.final and job.lines_left:  # stopped early: what did not run, and why (the job item's error)
        rows.append(("left", f"{job.lines_left:,} line(s) not run"))
    if job.final and job.status is JobStatus.CANCELLED and job.cancel_requested_at:
        rows.append(("cancelled", f"requested at {job.cancel_requested_at}"))
    if job.error:
        rows.append(("error", f"{job.error.get('code')}: {job.error.get('message')}"))
    for name in sorted(job.outputs) if job.final else ():  # written when the job ends
        rows.append((name, job.output_uri(name) or "-"))
    return rows


def batch_rows(batches: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A batch-mode job's batches at the provider: each one's id, status and counts, and in all how
    many of their requests the provider reports finished (live progress while the job waits)."""
    if not batches:
        return []
    total = sum(b["requests"] for b in batches)
    finished = sum(b["completed"] + b["failed"] for b in batches)
    rows = [("at provider", f"{finished:,}/{total:,} finished in {len(batches)} batch(es)")]
    for b in batches:
        state = "merged" if b["merged"] else b["status"]
        counts = f"{b['completed']:,} completed, {b['failed']:,} failed of {b['requests']:,}"
        rows.append(("batch", f"{b['batch_id'] or '(being created)'} {state}: {counts} ({b['model']})"))
    return rows


def limits_of(job: Job, header: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The file's limits as the cost guard takes them — set on the job (``promptdrop budget``), else
    in the upload's job header — each with where it was set and what every run has used of it. A
    limit from the function's environment is not to be seen from here: the stop of a job that hit
    one names it."""
    own = {"usd": job.budget_usd, "tokens": job.budget_tokens, "requests": job.max_requests}
    used = {
        "usd": job.progress_cost_usd or 0.0,
        "tokens": job.progress_prompt_tokens + job.progress_completion_tokens,
        "requests": job.progress_sent,
    }
    limits = {}
    for kind, set_on_job in own.items():
        limit, where = set_on_job, "job"
        if limit is None:
            try:
                limit, where = float(header[BUDGET_METADATA[kind]]), "upload"
            except (KeyError, ValueError):  # none; or one the function refuses (invalid_budget), said there
                continue
        limits[kind] = {"limit": limit, "set": where, "used": used[kind]}
    return limits


def _budget_cell(job: Job, header: Mapping[str, str]) -> str | None:
    """:func:`limits_of` as a person reads it: ``$0.5 from the upload ($0.12 spent), ...``."""
    parts = []
    for kind, found in limits_of(job, header).items():
        where = "set on the job" if found["set"] == "job" else "from the upload"
        if kind == "usd":
            parts.append(f"{money(found['limit'])} {where} ({money(found['used'])} spent)")
        else:
            word, verb = ("tokens", "used") if kind == "tokens" else ("requests", "sent")
            parts.append(f"{found['limit']:,.0f} {word} {where} ({found['used']:,} {verb})")
    return ", ".join(parts) or None


def _progress_cell(job: Job) -> str:
    """Done, out of the line count while some lines have no outcome (a running or stopped job)."""
    if job.line_count is None or (job.final and job.done == job.line_count):
        return f"{job.done:,}"
    return f"{job.done:,}/{job.line_count:,}"


def _list(view: View, jobs: list[Job]) -> None:
    now = datetime.now(UTC)
    if view.json_mode:
        view.json([job_json(job, failures=False) for job in jobs])
        return
    if not jobs:
        view.line("no jobs yet (drop a file under the input prefix, or: promptdrop submit FILE)")
        return
    columns = [
        Column("started"),
        Column("job"),
        Column("status"),
        Column("done", True),
        Column("failed", True),
        Column("cost", True),
        Column("input"),
    ]
    rows = [
        [
            ago(job.started_at, now) if view.rich else (job.started_at or "-"),
            job.job_id[:12],
            job.status + ("*" if job.cancel_requested_at and not job.final else ""),
            _progress_cell(job),
            number(job.not_ok),
            money(job.cost_usd),
            job.key,
        ]
        for job in jobs
    ]
    view.table(columns, rows, title=f"{len(jobs)} most recent job(s), newest first")
    if any(job.cancel_requested_at and not job.final for job in jobs):
        view.line("* cancel requested")


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "status",
        parents=[parent],
        help="one job in detail, or the recent jobs",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("ref", nargs="?", metavar="KEY | JOB_ID", help=REF_HELP)
    cmd.add_argument("--limit", type=int, default=20, metavar="N", help="recent jobs to list (default 20)")
    add_resource_flags(cmd, "table", "bucket")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    store = JobStore(aws, resolve(args, aws))
    if args.ref is None:
        _list(view, store.recent(args.limit))
        return ExitCode.OK
    job = store.locate(args.ref)
    if view.json_mode:
        view.json(job_json(job, store))
        return ExitCode.OK
    view.fields(
        detail_rows(job, store.failures_by_code(job), store.header(job)) + batch_rows(provider_batches(store, job))
    )
    if not job.final and parse_time(job.updated_at) is None:
        view.note("(no live progress on this job item: counts appear as the function reports them)")
    return ExitCode.OK
