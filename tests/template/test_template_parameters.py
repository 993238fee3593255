"""The template's parameters accept exactly what the function accepts: a value CloudFormation lets
through must not fail the first invocation, and the one it refuses must be one the code refuses
too (or an unsafe one, such as a plain-http API URL)."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
from promptdrop.settings import Settings
from pydantic import ValidationError

from tests.template.sam import raw_template


@functools.cache
def _parameters() -> dict[str, Any]:
    parameters: dict[str, Any] = raw_template()["Parameters"]
    return parameters


def _settings(**values: object) -> Settings:
    return Settings(table="jobs", dlq_url="https://sqs.example/dlq", **values)


def _accepts(name: str, value: str) -> bool:
    """Whether CloudFormation accepts ``value`` for parameter ``name`` (its documented checks)."""
    spec = _parameters()[name]
    if spec["Type"] == "Number":
        number = float(value)
        return spec.get("MinValue", number) <= number <= spec.get("MaxValue", number)
    if not spec.get("MinLength", 0) <= len(value) <= spec.get("MaxLength", len(value)):
        return False
    return "AllowedPattern" not in spec or re.fullmatch(spec["AllowedPattern"], value) is not None


@pytest.mark.parametrize(
    ("parameter", "field"),
    [
        ("MaxConcurrency", "max_concurrency"),
        ("Rpm", "rpm"),
        ("Tpm", "tpm"),
        ("BudgetUsd", "budget_usd"),
        ("BudgetTokens", "budget_tokens"),
        ("MaxRequests", "max_requests"),
    ],
)
def test_number_ranges_are_the_settings_ranges(parameter: str, field: str) -> None:
    spec = _parameters()[parameter]
    low = int(spec["MinValue"])
    _settings(**{field: str(low)})  # the lowest value the template allows is valid...
    with pytest.raises(ValidationError):
        _settings(**{field: str(low - 1)})  # ...and one below it is not
    if "MaxValue" in spec:
        _settings(**{field: str(spec["MaxValue"])})
        with pytest.raises(ValidationError):
            _settings(**{field: str(int(spec["MaxValue"]) + 1)})
    else:  # the code sets no upper bound either
        _settings(**{field: str(10**12)})


def test_the_modes_the_template_allows_are_the_modes_the_function_takes() -> None:
    allowed = _parameters()["Mode"]["AllowedValues"]
    for mode in allowed:
        _settings(mode=mode)
    assert set(allowed) == set(Settings.model_fields["mode"].annotation.__args__)  # type: ignore[union-attr]


def test_the_cache_policies_the_template_allows_are_the_ones_the_function_takes() -> None:
    allowed = _parameters()["AnswerCache"]["AllowedValues"]
    assert allowed == ["off", "deterministic", "all"]  # "off" quoted: YAML would read a bare off as false
    for policy in allowed:
        _settings(cache=policy)


def test_every_default_is_accepted() -> None:
    for name, spec in _parameters().items():
        assert _accepts(name, str(spec["Default"])), name


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("", True),  # the SDK's default
        ("https://api.openai.com/v1", True),
        ("https://gateway.internal:8443/openai/v1", True),
        ("http://localhost:8080/v1", True),  # loopback: a proxy beside the function
        ("http://127.0.0.1:4000/v1", True),
        ("http://[::1]:4000", True),
        ("http://localhost", True),
        ("http://api.openai.com/v1", False),  # the key would cross the network in clear text
        ("http://10.0.0.5:8080/v1", False),
        ("http://localhost.attacker.example/v1", False),
        ("http://127.0.0.1@attacker.example/v1", False),
        ("https://", False),
        ("ftp://api.openai.com", False),
        ("api.openai.com/v1", False),
        ("https://api.openai.com/v1 ", False),
    ],
)
def test_openai_base_url_is_https_or_loopback(url: str, accepted: bool) -> None:
    assert _accepts("OpenAIBaseUrl", url) is accepted


@pytest.mark.parametrize(
    ("parameter", "prefix", "accepted"),
    [
        ("InputPrefix", "inputs/", True),
        ("InputPrefix", "", True),  # every key
        ("InputPrefix", "/inputs/", False),  # S3 keys never start with '/': nothing would match
        ("InputPrefix", "in*/", False),  # the notification filter has no wildcards
        ("OutputPrefix", "results/", True),
        ("OutputPrefix", "", False),  # outputs beside the inputs would trigger new jobs
        ("OutputPrefix", "/results/", False),
    ],
)
def test_prefixes_are_ones_the_function_accepts(parameter: str, prefix: str, accepted: bool) -> None:
    assert _accepts(parameter, prefix) is accepted
    field = "input_prefix" if parameter == "InputPrefix" else "output_prefix"
    if accepted:
        _settings(**{field: prefix})
    elif prefix.startswith("/") or not prefix:
        with pytest.raises(ValidationError):
            _settings(**{field: prefix})


@pytest.mark.parametrize(
    ("parameter", "value", "accepted"),
    [
        ("RequestTtlDays", "0", True),  # off
        ("RequestTtlDays", "30", True),
        ("RequestTtlDays", "-1", False),
        ("ResultsExpirationDays", "0", True),  # never
        ("ResultsExpirationDays", "90", True),
        ("ResultsExpirationDays", "-1", False),
        ("EventBusName", "default", True),
        ("EventBusName", "promptdrop-jobs", True),
        ("EventBusName", "arn:aws:events:us-east-1:123456789012:event-bus/x", False),  # a name, not an ARN
        ("EventBusName", "", False),
        ("AlarmTopicArn", "", True),  # no notification
        ("AlarmTopicArn", "arn:aws:sns:eu-west-1:123456789012:ops-alerts", True),
        ("AlarmTopicArn", "ops-alerts", False),
        ("AlarmTopicArn", "arn:aws:sqs:eu-west-1:123456789012:ops-alerts", False),
    ],
)
def test_new_parameters_take_what_they_describe(parameter: str, value: str, accepted: bool) -> None:
    assert _accepts(parameter, value) is accepted
