"""The Lambda entry point: parse the event, run each piece of work, report what failed.

Thin on purpose: events → work items (``events``), work → outcomes (``jobs``), with the
dependencies built once per container (``runtime``). SQS batches report partial failures with
``batchItemFailures``, so one bad message is retried without redoing the others.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from . import runtime, tracing
from .events import FileWork, Skip, SqsMessage, UnrecognizedEvent, WorkItem, parse_event, parse_message
from .jobs import FileRef, JobResult, JobRunner, ShouldStop
from .messages import PromptFailure, UnitMessage
from .run_metrics import SERVICE, record_run
from .settings import Settings, get_settings

__all__ = ["handle_sqs", "lambda_handler", "run_work"]

logger = Logger(service="promptdrop")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "promptdrop")
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)  # every metric line carries the same service


def _check_key(settings: Settings, work: FileWork) -> str | None:
    if work.key.startswith(settings.output_prefix):
        return f"key is under the output prefix {settings.output_prefix!r}: never processed (no recursion)"
    if not work.key.startswith(settings.input_prefix):
        return f"key is outside the input prefix {settings.input_prefix!r}"
    return None


def _to_run(items: list[WorkItem], settings: Settings) -> list[WorkItem]:
    """The items that are work: skips and refused keys are logged and dropped here."""
    work: list[WorkItem] = []
    for item in items:
        if isinstance(item, Skip):
            logger.info("skipped", extra={"reason": item.reason})
        elif isinstance(item, FileWork) and (why := _check_key(settings, item)) is not None:
            logger.warning("refused key", extra={"bucket": item.bucket, "key": item.key, "reason": why})
        else:
            work.append(item)
    return work


async def _run_items(
    items: list[WorkItem], context: LambdaContext, settings: Settings, *, last_delivery: bool = False
) -> list[JobResult]:
    work = _to_run(items, settings)
    if not work:
        return []  # e.g. S3's s3:TestEvent, sent before the key is in the secret: nothing to build
    rt = await runtime.get_runtime(settings)
    await rt.refresh_key()
    margin_ms = settings.deadline_margin_s * 1000

    def should_stop(within_s: float = 0.0) -> bool:
        return context.get_remaining_time_in_millis() < margin_ms + within_s * 1000

    results = await run_work(rt.runner, work, should_stop=should_stop, last_delivery=last_delivery)
    for result in results:
        if result.key_rejected:
            rt.key_rejected()
        logger.info("run done", extra={"job": {k: v for k, v in vars_of(result).items() if k != "outputs"}})
        record_run(metrics, NAMESPACE, result)
    return results


async def run_work(
    runner: JobRunner, work: list[WorkItem], *, should_stop: ShouldStop, last_delivery: bool = False
) -> list[JobResult]:
    """Each work item run by the runner's entry point for it, in order."""
    results: list[JobResult] = []
    for item in work:
        if isinstance(item, FileWork):
            ref = FileRef(item.bucket, item.key)
            async with tracing.run_span("run file", key=item.key):
                run = runner.run_file(ref, redrive=item.redrive, should_stop=should_stop, last_delivery=last_delivery)
                results.append(await run)
        elif isinstance(item, UnitMessage):
            async with tracing.run_span("run unit", job_id=item.job_id, unit=item.unit):
                results.append(await runner.run_unit(item, should_stop=should_stop, last_delivery=last_delivery))
        elif isinstance(item, PromptFailure):
            async with tracing.run_span("redrive prompt", job_id=item.job_id):
                results.append(await runner.redrive(item, last_delivery=last_delivery))
    return results


def vars_of(result: JobResult) -> dict[str, Any]:
    """The result as JSON values (a direct invocation's answer, the log): the metrics' tally left out."""
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "tally"}


# Runs one message's work items (its last delivery or not) and returns their results.
RunMessage = Callable[[list[WorkItem], bool], list[JobResult]]


def handle_sqs(messages: list[SqsMessage], run: RunMessage) -> dict[str, Any]:
    """Run each message; report those that must come back (``batchItemFailures``), the others acknowledged."""
    failures: list[dict[str, str]] = []
    for message in messages:
        try:
            items = parse_message(message)
        except UnrecognizedEvent as exc:
            # A body of no accepted shape will never parse: retrying cannot help, so it is
            # acknowledged and logged rather than sent round the queue until it dead-letters.
            logger.warning("unrecognized message", extra={"message_id": message.message_id, "reason": str(exc)})
            continue
        try:
            results = run(items, message.last_delivery)
        except Exception:
            # Only a passing AWS or network fault gets here (the runs end their jobs on anything else):
            # the redelivery resumes from the journal.
            logger.exception("message failed; it will be delivered again", extra={"message_id": message.message_id})
            failures.append({"itemIdentifier": message.message_id})
            continue
        # BUSY: another live run holds the unit; UNFINISHED: stopped with no work queue to continue on.
        # Either way the message comes back after its visibility timeout and resumes from the journal.
        if any(r.status.hand_back for r in results):
            failures.append({"itemIdentifier": message.message_id})
    return {"batchItemFailures": failures}


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
    messages, items = parse_event(event)
    if messages is not None:

        def run(items: list[WorkItem], last_delivery: bool) -> list[JobResult]:
            return runtime.run(_run_items(items, context, settings, last_delivery=last_delivery))

        return handle_sqs(messages, run)
    results = runtime.run(_run_items(items, context, settings))
    return {"jobs": [vars_of(r) for r in results]}
