"""The operator's view in the template: a dashboard that parses, alarms that each notify the alarm
topic, and tracing wired only when asked for. (That the dashboard and the alarms name metrics the
handler really emits is tests/integration/test_metrics.py's, from the handler's own output.)"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.template.monitoring import alarm_metrics, dashboard, dashboard_metrics, namespace

pytestmark = pytest.mark.xdist_group("template")

NOTIFY = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}


def test_every_alarm_notifies_the_alarm_topic_when_it_fires_and_when_it_clears(cfn_template: dict[str, Any]) -> None:
    alarms = _alarms(cfn_template)
    assert set(alarms) == {
        "DeadLetterQueueAlarm",
        "FailureRateAlarm",
        "RateLimitedAlarm",
        "CostPerHourAlarm",
        "JobAgeAlarm",
    }
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert (props["AlarmActions"], props["OKActions"]) == (NOTIFY, NOTIFY), logical_id
        assert props["TreatMissingData"] == "notBreaching", logical_id  # an idle stack publishes nothing
        assert "promptdrop (${AWS::StackName})" in props["AlarmDescription"]["Fn::Sub"], logical_id


def test_each_alarm_threshold_is_its_parameter(sam_template: dict[str, Any]) -> None:
    thresholds = {k: a["Properties"]["Threshold"] for k, a in _alarms(sam_template).items()}
    assert thresholds == {
        "DeadLetterQueueAlarm": 0,
        "FailureRateAlarm": {"Ref": "FailureRateAlarmPercent"},
        "RateLimitedAlarm": {"Ref": "RateLimitedAlarmPercent"},
        "CostPerHourAlarm": {"Ref": "CostPerHourAlarmUsd"},
        "JobAgeAlarm": {"Ref": "JobAgeAlarmHours"},
    }
    # a cost alarm only when a threshold is set (0, the default, means none)
    assert sam_template["Resources"]["CostPerHourAlarm"]["Condition"] == "HasCostAlarm"
    assert sam_template["Conditions"]["HasCostAlarm"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CostPerHourAlarmUsd"}, 0]}]
    }


def test_metric_math_alarms_return_one_series_built_from_their_own_queries(sam_template: dict[str, Any]) -> None:
    for logical_id, alarm in _alarms(sam_template).items():
        queries = alarm["Properties"].get("Metrics")
        if queries is None:
            continue
        returned = [q for q in queries if q.get("ReturnData", True)]
        assert len(returned) == 1, logical_id
        ids = {q["Id"] for q in queries if "MetricStat" in q}
        used = set(re.findall(r"[a-z]\w*", returned[0]["Expression"]))
        assert ids <= used, f"{logical_id}: {ids - used} fetched but unused"


def test_the_job_age_alarm_takes_the_older_of_a_running_job_and_waiting_work(sam_template: dict[str, Any]) -> None:
    metrics = alarm_metrics(sam_template)["JobAgeAlarm"]
    assert {(m.namespace, m.name) for m in metrics} == {
        ("promptdrop", "JobAge"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    }
    queries = sam_template["Resources"]["JobAgeAlarm"]["Properties"]["Metrics"]
    (queue,) = (q for q in queries if q["Id"] == "waiting")
    assert queue["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WorkQueue", "QueueName"]}}
    ]


def test_the_dashboard_shows_what_the_issue_asks_for(sam_template: dict[str, Any]) -> None:
    space = namespace(sam_template)
    shown = dashboard_metrics(sam_template)
    own = {(m.name, m.dimensions) for m in shown if m.namespace == space}
    assert {
        ("JobsStarted", frozenset({"service"})),
        ("JobsFinished", frozenset({"Outcome", "service"})),
        ("PromptsSucceeded", frozenset({"Model", "service"})),
        ("RateLimited", frozenset({"Model", "service"})),
        ("PromptsFailed", frozenset({"Code", "service"})),
        ("CostUsd", frozenset({"Model", "service"})),
        ("JobAge", frozenset({"service"})),
    } <= own
    aws = {(m.namespace, m.name) for m in shown if m.namespace.startswith("AWS/")}
    assert aws == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),  # dead-letter queue depth
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),  # work waiting
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "ConcurrentExecutions"),
    }
    # no namespace but the function's own and AWS's: a typo'd namespace would show an empty graph
    assert {m.namespace for m in shown} - {space} == {"AWS/SQS", "AWS/Lambda"}


def test_the_dashboard_names_this_stacks_resources(sam_template: dict[str, Any]) -> None:
    body = sam_template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for reference in ("${ProcessorFunction}", "${DeadLetterQueue.QueueName}", "${WorkQueue.QueueName}"):
        assert reference in body
    widgets = dashboard(sam_template)["widgets"]
    assert all(w["properties"]["region"] == "1" for w in widgets)  # "${AWS::Region}" (placeholder 1)
    titles = [w["properties"]["title"] for w in widgets]
    assert len(titles) == len(set(titles)) == 11


def test_tracing_is_off_unless_asked_for_and_then_active_with_its_grant(
    sam_template: dict[str, Any], cfn_template: dict[str, Any]
) -> None:
    function = cfn_template["Resources"]["ProcessorFunction"]["Properties"]
    assert function["TracingConfig"] == {"Mode": {"Fn::If": ["TracingOn", "Active", "PassThrough"]}}
    variables = function["Environment"]["Variables"]
    # Powertools' own switch: with it "true" the code imports no X-Ray and makes no span
    assert variables["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingOn", "false", "true"]}
    assert sam_template["Conditions"]["TracingOn"] == {"Fn::Equals": [{"Ref": "Tracing"}, "active"]}
    policy = cfn_template["Resources"]["TracingPolicy"]
    assert policy["Condition"] == "TracingOn"
    assert policy["Properties"]["Roles"] == [{"Ref": "ProcessorRole"}]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
