"""A job's outputs, rebuilt from the journal: ``.out.jsonl`` and ``.errors.jsonl`` in input order,
``.out.txt`` for a ``.txt`` input, ``.out.csv`` for a ``.csv`` one (:mod:`.table`), ``.summary.json``,
and the job item's final counts.

Outputs are always rebuilt whole from the journal, so whichever run finishes a job writes the
same files; memory does not grow with the file (:class:`~promptdrop.outputs.OrderedSpool`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.answers import answer_text_of
from ..engine.dispatch import DispatchReport
from ..outputs import OrderedSpool, estimate_cost_usd, output_line
from ..prices import PriceKey, Tokens, add_tokens, price_key
from ..records import JobRecord, JobStatus, RequestRecord
from .ports import EventBus, Journal, ObjectStore
from .run_result import FileRef, JobResult, RunStatus, now_iso, run_figures
from .table import CsvTable

__all__ = ["DETAIL_TYPES", "OutputWriter"]


@dataclass(slots=True)
class _Tally:
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0  # of the prompt tokens, read from the prompt cache
    cache_write_tokens: int = 0  # of the prompt tokens, written to the prompt cache
    # prompt, completion, cache read, cache write tokens by model (and tier, where it is priced apart: flex)
    tokens_by_model: dict[PriceKey, Tokens] = field(default_factory=dict)
    text_answer: str | None = None
    service_tiers: dict[str, int] = field(default_factory=dict)  # answers by the tier that served them
    cached: int = 0  # answers taken from the answer cache (paid for by an earlier request)

    def add(self, record: RequestRecord, model: str) -> None:
        """Count the request; its tokens too, answered or not (a failed one may have paid for unusable answers)."""
        if record.succeeded:
            self.succeeded += 1
            if record.service_tier is not None:
                self.service_tiers[record.service_tier] = self.service_tiers.get(record.service_tier, 0) + 1
            self.cached += record.cached
        else:
            self.failed += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cache_read_tokens += record.cached_tokens
        self.cache_write_tokens += record.cache_write_tokens
        key = price_key(model, record.service_tier)
        add_tokens(
            self.tokens_by_model,
            key,
            record.prompt_tokens,
            record.completion_tokens,
            record.cached_tokens,
            record.cache_write_tokens,
        )

    def status(self, job: JobRecord, report: DispatchReport | None) -> JobStatus:
        if not job.all_units_done:  # written early: a cancel, a spent budget, a fatal error or the hop bound
            if job.cancel_requested_at is not None:
                return JobStatus.CANCELLED
            return JobStatus.BUDGET_EXCEEDED if job.budget_reported is not None else JobStatus.FAILED
        if report is not None and report.fatal is not None:
            return JobStatus.FAILED
        if self.failed == 0:
            return JobStatus.SUCCEEDED
        return JobStatus.PARTIAL if self.succeeded else JobStatus.FAILED


# The completion event's detail-type, per final state (its detail is the summary).
DETAIL_TYPES = {
    JobStatus.SUCCEEDED: "Job Succeeded",
    JobStatus.PARTIAL: "Job Partial",
    JobStatus.FAILED: "Job Failed",
    JobStatus.CANCELLED: "Job Cancelled",
    JobStatus.BUDGET_EXCEEDED: "Job Budget Exceeded",
}


def _cost_by_tier(tokens: Mapping[PriceKey, tuple[int, ...]]) -> dict[str, float | None]:
    """The estimated cost of the answers of each tier priced apart (``standard`` for the rest): which way
    the answers came, and what each way cost."""
    by_tier: dict[str, dict[PriceKey, tuple[int, ...]]] = {}
    for key, counts in tokens.items():
        tier = key[1] if isinstance(key, tuple) and key[1] else "standard"
        by_tier.setdefault(tier, {})[key] = counts
    return {tier: estimate_cost_usd(part) for tier, part in sorted(by_tier.items())}


class OutputWriter:
    def __init__(
        self, *, journal: Journal, store: ObjectStore, default_model: str, publisher: EventBus | None = None
    ) -> None:
        self._journal = journal
        self._store = store
        self._default_model = default_model
        self._publisher = publisher

    async def write(self, job: JobRecord, report: DispatchReport | None) -> JobResult:
        """Rebuild every output file of ``job`` from the journal and close the job item."""
        out_bucket = job.output_bucket or job.bucket
        keys = job.outputs
        tally = await self._write_ordered(job, out_bucket, keys)
        if "text" in keys and tally.text_answer is not None:
            await self._store.put_bytes(
                out_bucket, keys["text"], tally.text_answer.encode(), "text/plain; charset=utf-8"
            )
        cost = estimate_cost_usd(tally.tokens_by_model)
        job.status = tally.status(job, report)
        job.succeeded, job.failed, job.total = tally.succeeded, tally.failed, tally.succeeded + tally.failed
        job.prompt_tokens, job.completion_tokens = tally.prompt_tokens, tally.completion_tokens
        job.finished_at = now_iso()
        job.estimated_cost_usd = str(cost) if cost is not None else None
        locations = {name: f"s3://{out_bucket}/{key}" for name, key in keys.items()}
        summary = _summary(job, cost, report, locations)
        summary["service_tiers"] = tally.service_tiers
        summary["cost_by_tier"] = _cost_by_tier(tally.tokens_by_model)
        summary["cached"] = tally.cached
        # Of the prompt tokens, those the prompt cache served and those written to it (each priced at its rate).
        summary["tokens"].update(cache_read=tally.cache_read_tokens, cache_write=tally.cache_write_tokens)
        await self._store.put_json(out_bucket, keys["summary"], summary)
        await self._journal.close_job(job)
        await self._announce(job, summary)
        result = JobResult.of_run(job.job_id, FileRef(job.bucket, job.key), RunStatus(job.status), report)
        result.total, result.succeeded, result.failed = job.total, job.succeeded, job.failed
        result.prompt_tokens, result.completion_tokens = job.prompt_tokens, job.completion_tokens
        result.outputs = locations
        return result

    async def _announce(self, job: JobRecord, summary: dict[str, Any]) -> None:
        """Publish the completion event — again only when the outcome changed (a redrive that
        answered a failure; not a redelivery). Published before it is noted: a crash between the
        two sends it twice, never not at all."""
        if self._publisher is None or job.outcome == job.published:
            return
        await self._publisher.publish(DETAIL_TYPES[job.status], summary)
        await self._journal.set_published(job.job_id, job.outcome)
        job.published = job.outcome

    async def _write_ordered(self, job: JobRecord, out_bucket: str, keys: dict[str, str]) -> _Tally:
        tally = _Tally()
        results, errors = OrderedSpool(), OrderedSpool()
        table = CsvTable() if "csv" in keys else None
        try:
            async for record in self._journal.requests.records(job.job_id):
                response = record.response
                if record.response_s3_key is not None:
                    response = json.dumps(await self._store.get_json(out_bucket, record.response_s3_key))
                if table is not None:
                    columns = record.columns
                    if record.columns_s3_key is not None:
                        columns = json.dumps(await self._store.get_json(out_bucket, record.columns_s3_key))
                    table.add(record, columns, response)
                line = output_line(job.job_id, record, response)
                tally.add(record, record.model or self._default_model)
                if record.succeeded:
                    results.add(record.line, line)
                    if "text" in keys and response is not None:
                        tally.text_answer = answer_text_of(response)
                else:
                    errors.add(record.line, line)
            for spool, key in ((results, keys["results"]), (errors, keys["errors"])):
                await self._store.put_stream(out_bucket, key, spool.sorted_lines(), "application/x-ndjson")
            if table is not None:
                await self._store.put_stream(out_bucket, keys["csv"], table.lines(), "text/csv; charset=utf-8")
        finally:
            results.close()
            errors.close()
            if table is not None:
                table.close()
        return tally


# Why a job ended before its last line, as the summary's ``stop.reason`` and ``last_run.stopped`` say.
_STOPPED_BY = {JobStatus.CANCELLED: "cancel", JobStatus.BUDGET_EXCEEDED: "budget"}


def _summary(
    job: JobRecord, cost: float | None, report: DispatchReport | None, locations: dict[str, str]
) -> dict[str, Any]:
    last_run = run_figures(report)
    stopped = _STOPPED_BY.get(job.status) or (str(report.stopped) if report and report.stopped else None)
    if last_run is not None:
        last_run["stopped"] = stopped
    stop = _stop(job, stopped)
    # A job run to its end has an outcome for every line: its count, should its first pass still be going.
    lines = job.line_count if job.line_count is not None or stop is not None else job.total
    return {
        "job_id": job.job_id,
        "status": job.status,
        "input": {"bucket": job.bucket, "key": job.key, "etag": job.etag},
        "counts": {"total": job.total, "succeeded": job.succeeded, "failed": job.failed},
        # The file's line count beside what was done (``counts.total``): what a stopped job did not run.
        "lines": {"count": lines, "done": job.total, "not_run": None if lines is None else max(0, lines - job.total)},
        "stop": stop,
        "tokens": {
            "prompt": job.prompt_tokens,
            "completion": job.completion_tokens,
            "total": job.prompt_tokens + job.completion_tokens,
        },
        "timings": {"started_at": job.started_at, "finished_at": job.finished_at},
        "estimated_cost_usd": cost,
        "units": job.units_total or 1,
        "last_run": last_run,
        "outputs": locations,
    }


def _stop(job: JobRecord, stopped: str | None) -> dict[str, Any] | None:
    """Why a job ended early — cancelled, its budget spent, an error every request would share, its
    continuations spent — from the job item's ``error`` (the dead letter's); None for a job run to its end."""
    if job.error is None and job.status not in _STOPPED_BY:
        return None
    error = job.error or {}
    stop = {"reason": stopped, "code": error.get("code"), "message": error.get("message")}
    if job.status is JobStatus.CANCELLED:
        stop["cancel_requested_at"] = job.cancel_requested_at
    return stop
