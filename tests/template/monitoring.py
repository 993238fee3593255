"""The metrics template.yaml's dashboard and alarms name, as CloudWatch matches them: (namespace, metric
name, dimension names). Shared by the template's own tests and the integration test that holds them to
what the handler really emits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = [
    "MetricRef",
    "alarm_metrics",
    "dashboard",
    "dashboard_metrics",
    "emitted_metrics",
    "named_dimension_values",
    "namespace",
]

# SEARCH('{Namespace,Dim1,Dim2} MetricName="Name"', ...): the schema in braces is the exact dimension set.
_SEARCH = re.compile(r"""SEARCH\('\{([^}]*)\}\s+MetricName="([^"]+)"'""")
_SUB_VARIABLE = re.compile(r"\$\{[^}]+\}")


class MetricRef(NamedTuple):
    namespace: str
    name: str
    dimensions: frozenset[str]


def namespace(template: dict[str, Any]) -> str:
    """The namespace the function writes its metrics to (Globals' POWERTOOLS_METRICS_NAMESPACE)."""
    value: str = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    return value


def dashboard(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's body as JSON, each ``${...}`` of its Fn::Sub replaced by a placeholder number
    (the body must still parse: a number stands anywhere a value may)."""
    (resource,) = (r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard")
    body = resource["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed: dict[str, Any] = json.loads(_SUB_VARIABLE.sub("1", body))
    return parsed


def dashboard_metrics(template: dict[str, Any]) -> set[MetricRef]:
    """Every metric a widget names: plain metric rows and SEARCH expressions (other math only combines those)."""
    found: set[MetricRef] = set()
    for widget in dashboard(template)["widgets"]:
        for row in widget["properties"].get("metrics", []):
            found |= set(_row_metrics(row))
    return found


def _row_metrics(row: list[Any]) -> Iterator[MetricRef]:
    if isinstance(row[0], dict):  # [{"expression": ...}]
        for schema, name in _SEARCH.findall(row[0]["expression"]):
            space, *dimensions = (part.strip() for part in schema.split(","))
            yield MetricRef(space, name, frozenset(dimensions))
        return
    values = [item for item in row if not isinstance(item, dict)]
    space, name, pairs = values[0], values[1], values[2:]
    yield MetricRef(space, name, frozenset(pairs[0::2]))


def alarm_metrics(template: dict[str, Any]) -> dict[str, set[MetricRef]]:
    """Each alarm's metrics: its one metric, or every MetricStat of its metric math."""
    alarms: dict[str, set[MetricRef]] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        specs = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        if "MetricName" in props:
            specs.append(props)
        alarms[logical_id] = {
            MetricRef(s["Namespace"], s["MetricName"], frozenset(d["Name"] for d in s.get("Dimensions", [])))
            for s in specs
        }
    return alarms


def emitted_metrics(output: str) -> dict[MetricRef, list[dict[str, Any]]]:
    """The metrics in the EMF lines of ``output`` (what Powertools printed), each with the lines naming it."""
    emitted: dict[MetricRef, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    ref = MetricRef(directive["Namespace"], metric["Name"], frozenset(dimensions))
                    emitted.setdefault(ref, []).append(blob)
    return emitted


def named_dimension_values(template: dict[str, Any], space: str) -> set[tuple[str, frozenset[tuple[str, Any]]]]:
    """The metrics of ``space`` that a plain dashboard row or an alarm names with their dimensions' values
    (a SEARCH takes every value): (name, {(dimension, value)}), as CloudWatch must find them."""
    named: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    for widget in dashboard(template)["widgets"]:
        for row in widget["properties"].get("metrics", []):
            values = [item for item in row if not isinstance(item, dict)]
            if values and values[0] == space:
                named.add((values[1], frozenset(zip(values[2::2], values[3::2], strict=True))))
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        specs = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        specs += [props] if "MetricName" in props else []
        for spec in specs:
            if spec["Namespace"] == space:
                dimensions = frozenset((d["Name"], d["Value"]) for d in spec.get("Dimensions", []))
                named.add((spec["MetricName"], dimensions))
    return named
