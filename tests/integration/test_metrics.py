"""The fleet in CloudWatch, from the handler's own EMF output: per-model and per-code figures that add up
to what the job wrote, and a dashboard and alarms (template.yaml) that name only metrics the handler
really emits, with the exact dimension sets CloudWatch will match them by."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import Pipeline
from tests.integration.test_events import CountdownContext
from tests.template.monitoring import (
    MetricRef,
    alarm_metrics,
    dashboard_metrics,
    emitted_metrics,
    named_dimension_values,
    namespace,
)
from tests.template.sam import raw_template

MODEL = "gpt-4o-mini"  # the stack's default model (ModelName), priced by genai-prices
OTHER = "gpt-4.1-nano"


def lines(*rows: dict[str, Any] | str) -> str:
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows)


MIXED = lines(
    {"prompt": "first"},
    {"prompt": "second"},
    {"prompt": "limited once [[fail:429x1]]"},
    {"prompt": "refused [[fail:400]]"},
    "{not json",
    {"prompt": "elsewhere", "model": OTHER},
    {"prompt": "elsewhere, refused [[fail:400]]", "model": OTHER},
)


def by_dimension(output: str, dimension: str) -> dict[str, dict[str, float]]:
    """Each EMF line carrying ``dimension`` (beside ``service``): its value -> its metrics, summed over lines."""
    found: dict[str, Counter[str]] = {}
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        blob = json.loads(line)
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        if sorted(directive["Dimensions"][0]) != sorted([dimension, "service"]):
            continue
        figures = found.setdefault(blob[dimension], Counter())
        for metric in directive["Metrics"]:
            values = blob[metric["Name"]]
            figures[metric["Name"]] += sum(values) if isinstance(values, list) else values
    return {value: dict(figures) for value, figures in found.items()}


def test_each_model_and_failure_code_gets_its_own_figures_adding_up_to_the_job(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file for two models: answers, a 429 on the way, API refusals and a line that is no request
    p = pipeline
    key = "inputs/two-models.jsonl"
    p.put(key, MIXED)

    # When it runs through the real handler
    capsys.readouterr()
    p.drain()
    out = capsys.readouterr().out

    # Then each model's line says what was asked of it, 429s included
    models = by_dimension(out, "Model")
    assert set(models) == {MODEL, OTHER}
    assert {m: (f["PromptsSucceeded"], f["PromptsFailed"], f["RateLimited"]) for m, f in models.items()} == {
        MODEL: (3, 1, 1),
        OTHER: (1, 1, 0),
    }
    # and its tokens and cost add up to the job's own figures (the summary the run wrote)
    summary = p.summary(key)
    assert sum(f["PromptTokens"] for f in models.values()) == summary["tokens"]["prompt"]
    assert sum(f["CompletionTokens"] for f in models.values()) == summary["tokens"]["completion"]
    assert all(f["CostUsd"] > 0 for f in models.values())
    assert sum(f["CostUsd"] for f in models.values()) == pytest.approx(summary["estimated_cost_usd"])

    # and the failures are counted by the codes the errors file gives them (the broken line's too)
    codes = by_dimension(out, "Code")
    written = Counter(e["error"]["code"] for e in p.jsonl(key, ".errors.jsonl"))
    assert {code: f["PromptsFailed"] for code, f in codes.items()} == dict(written)
    assert set(written) == {"invalid_line", "http_400"}

    # and the job is counted started once and finished once, by its outcome
    assert by_dimension(out, "Outcome") == {"PARTIAL": {"JobsFinished": 1}}
    service = emitted_metrics(out)
    (started,) = service[MetricRef("promptdrop", "JobsStarted", frozenset({"service"}))]
    assert started["JobsStarted"] == [1.0]


def test_the_dashboard_and_alarms_name_only_metrics_the_handler_emits(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job that runs over several invocations (each reaches its deadline after a few dispatches)
    # and meets every figure there is: answers, a 429, a refusal, a line that is no request
    p = pipeline
    key = "inputs/every-metric.jsonl"
    p.put(key, lines(*[{"prompt": f"question {i}"} for i in range(12)], *MIXED.splitlines()))

    # When it runs through the real handler
    capsys.readouterr()
    p.drain(context_factory=lambda: CountdownContext(looks=4))
    emitted = emitted_metrics(capsys.readouterr().out)
    assert p.summary(key)["status"] == "PARTIAL"

    # Then every metric a widget or an alarm names in the function's namespace is one the handler
    # printed, with exactly that dimension set (the namespace as the template sets it for the function)
    template = raw_template()
    own = namespace(template)
    printed = {(m.name, m.dimensions) for m in emitted}
    assert {m.namespace for m in emitted} == {own}
    shown = {m for m in dashboard_metrics(template) if m.namespace == own}
    assert shown
    assert {(m.name, m.dimensions) for m in shown} <= printed, {(m.name, m.dimensions) for m in shown} - printed
    for alarm, metrics in alarm_metrics(template).items():
        named = {(m.name, m.dimensions) for m in metrics if m.namespace == own}
        assert named <= printed, f"{alarm} names {named - printed}, which the handler never emits"
    # and where a graph or an alarm names a dimension's value (service), the handler's lines carry that value
    carried = {
        (ref.name, frozenset((d, blob[d]) for d in ref.dimensions)) for ref, blobs in emitted.items() for blob in blobs
    }
    valued = named_dimension_values(template, own)
    assert valued
    assert valued <= carried, valued - carried
    # and the job age the alarm reads was reported by the runs that left the job running
    ages = emitted[MetricRef(own, "JobAge", frozenset({"service"}))]
    assert ages
    assert all(0 <= age < 600 for blob in ages for age in blob["JobAge"])
