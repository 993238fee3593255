"""What each run did, as CloudWatch metrics (EMF log lines, which CloudWatch turns into metrics).

Every metric carries the ``service`` dimension; some also one of ``Model``, ``Code`` or ``Outcome``.
CloudWatch matches a metric by its exact set of dimensions, so each set is its own metric: the
dashboard and the alarms in template.yaml name these sets exactly (README, "Monitoring"; checked
against this module's real output by tests/integration/test_metrics.py).

- ``service``: Invocations, PromptsSucceeded, PromptsFailed, PromptTokens, CompletionTokens,
  RateLimited, LatencyAvg (the handler's shared :class:`Metrics`, flushed once per invocation), and
  CostUsd, JobsStarted, JobAge.
- ``Model, service``: PromptsSucceeded, PromptsFailed, RateLimited, PromptTokens, CompletionTokens,
  CostUsd — one EMF line per model a run asked for.
- ``Code, service``: PromptsFailed — one line per failure code.
- ``Outcome, service``: JobsFinished — one line per job a run ended.

Figures are this run's own work (a redrive of one prompt counts one prompt), written when the run
ends: a run lasts up to the function's timeout, so its figures land at once at its end.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .jobs import JobResult, RunStatus
from .records import FINAL_JOB_STATES

__all__ = ["LEFT_RUNNING", "SERVICE", "record_run"]

SERVICE = "promptdrop"  # the `service` dimension of every metric (the dashboard and alarms name it)
# Runs that leave their job running (JobAge). Those that end it (JobsFinished) end in a final job state.
LEFT_RUNNING = frozenset(
    {RunStatus.CONTINUED, RunStatus.SHARD_DONE, RunStatus.HANDED_OFF, RunStatus.UNFINISHED, RunStatus.BUSY}
)
_NO_MODEL = "unnamed"  # a request that names no model (a dimension's value may not be empty)


def record_run(metrics: Metrics, namespace: str, result: JobResult, *, now: datetime | None = None) -> None:
    """Add ``result``'s service-wide figures to ``metrics``; print its per-model, per-code and
    per-outcome figures, each dimension set its own EMF line."""
    count = MetricUnit.Count
    metrics.add_metric(name="PromptsSucceeded", unit=count, value=result.run_succeeded)
    metrics.add_metric(name="PromptsFailed", unit=count, value=result.run_failed)
    metrics.add_metric(name="PromptTokens", unit=count, value=result.run_prompt_tokens)
    metrics.add_metric(name="CompletionTokens", unit=count, value=result.run_completion_tokens)
    metrics.add_metric(name="RateLimited", unit=count, value=result.rate_limited)
    if result.latency_avg_ms is not None:
        metrics.add_metric(name="LatencyAvg", unit=MetricUnit.Milliseconds, value=result.latency_avg_ms)
    if result.started:
        metrics.add_metric(name="JobsStarted", unit=count, value=1)
    if (age := _age_s(result, now or datetime.now(UTC))) is not None:
        metrics.add_metric(name="JobAge", unit=MetricUnit.Seconds, value=age)
    tally, costs = result.tally, []
    for model in sorted(tally.models.keys() | result.rate_limited_by_model.keys()):
        figures = tally.models.get(model)
        line = _line(namespace, Model=model or _NO_MODEL)
        line.add_metric(name="RateLimited", unit=count, value=result.rate_limited_by_model.get(model, 0))
        if figures is not None:
            line.add_metric(name="PromptsSucceeded", unit=count, value=figures.answered)
            line.add_metric(name="PromptsFailed", unit=count, value=figures.failed)
            line.add_metric(name="PromptTokens", unit=count, value=figures.prompt_tokens)
            line.add_metric(name="CompletionTokens", unit=count, value=figures.completion_tokens)
            if (cost := figures.cost_usd()) is not None:  # a model with no known price has no cost metric
                line.add_metric(name="CostUsd", unit=MetricUnit.NoUnit, value=cost)
                costs.append(cost)
        line.flush_metrics()
    if costs:
        metrics.add_metric(name="CostUsd", unit=MetricUnit.NoUnit, value=sum(costs))
    for code, failed in sorted(tally.failure_codes.items()):
        line = _line(namespace, Code=str(code))
        line.add_metric(name="PromptsFailed", unit=count, value=failed)
        line.flush_metrics()
    if result.status.value in FINAL_JOB_STATES:  # the run ended its job
        line = _line(namespace, Outcome=str(result.status))
        line.add_metric(name="JobsFinished", unit=count, value=1)
        line.flush_metrics()


def _line(namespace: str, **dimension: str) -> EphemeralMetrics:
    """An EMF line of its own: ``dimension`` beside ``service``, shared by the metrics added to it."""
    line = EphemeralMetrics(namespace=namespace, service=SERVICE)
    for name, value in dimension.items():
        line.add_dimension(name=name, value=value)
    return line


def _age_s(result: JobResult, now: datetime) -> float | None:
    """Seconds since the job started, for a run that leaves it running (the age alarm's figure)."""
    if result.status not in LEFT_RUNNING or result.job_started_at is None:
        return None
    started = datetime.fromisoformat(result.job_started_at)
    return max(0.0, (now - started).total_seconds())
