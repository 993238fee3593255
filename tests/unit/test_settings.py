"""Configuration errors name the variable a user sets, never the pydantic field."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from promptdrop.settings import ConfigurationError, get_settings


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PROMPTDROP_TABLE", "jobs")
    monkeypatch.setenv("PROMPTDROP_DLQ_URL", "https://sqs.example/dlq")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PROMPTDROP_MAX_CONCURRENCY",
            "0",
            "PROMPTDROP_MAX_CONCURRENCY='0': Input should be greater than or equal to 1",
        ),
        ("PROMPTDROP_MAX_CONCURRENCY", "ten", "PROMPTDROP_MAX_CONCURRENCY='ten': Input should be a valid integer"),
        ("PROMPTDROP_MAX_ATTEMPTS", "6.5", "PROMPTDROP_MAX_ATTEMPTS='6.5': Input should be a valid integer"),
        ("PROMPTDROP_REQUEST_TIMEOUT_S", "inf", "PROMPTDROP_REQUEST_TIMEOUT_S='inf': Input should be a finite number"),
        ("PROMPTDROP_LEASE_S", "nan", "PROMPTDROP_LEASE_S='nan': Input should be a finite number"),
        ("PROMPTDROP_DEADLINE_MARGIN_S", "-1", "PROMPTDROP_DEADLINE_MARGIN_S='-1'"),
        ("PROMPTDROP_OUTPUT_PREFIX", "/results/", "PROMPTDROP_OUTPUT_PREFIX='/results/': S3 key prefixes do not start"),
        ("PROMPTDROP_SHARD_BYTES", "x" * 500, "PROMPTDROP_SHARD_BYTES='" + "x" * 80 + "…'"),
        # every number bounded: a 400-digit one would overflow the pace's and the cost guard's floats
        ("PROMPTDROP_BUDGET_TOKENS", "9" * 400, "Input should be less than or equal to 1000000000000000"),
        ("PROMPTDROP_MAX_REQUESTS", "9" * 400, "Input should be less than or equal to 1000000000000000"),
        ("PROMPTDROP_RPM", "9" * 400, "PROMPTDROP_RPM='999"),
        ("PROMPTDROP_TPM", "9" * 400, "Input should be less than or equal to 1000000000000000"),
        ("PROMPTDROP_BUDGET_USD", "1e300", "Input should be less than or equal to 1000000000000000"),
        ("PROMPTDROP_SECRET_TTL_S", "1e300", "PROMPTDROP_SECRET_TTL_S='1e300'"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        get_settings()
    assert message in str(info.value)
    assert variable.removeprefix("PROMPTDROP_").lower() + "\n" not in str(info.value)  # not pydantic's layout


def test_a_missing_variable_is_named_with_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTDROP_TABLE")
    with pytest.raises(ConfigurationError, match=r"PROMPTDROP_TABLE is not set \(DynamoDB table holding"):
        get_settings()


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTDROP_RPM", "-5")
    monkeypatch.setenv("PROMPTDROP_OUTPUT_PREFIX", "")
    with pytest.raises(ConfigurationError) as info:
        get_settings()
    assert "PROMPTDROP_RPM='-5'" in str(info.value)
    assert "PROMPTDROP_OUTPUT_PREFIX='': must not be empty" in str(info.value)


def test_the_deadline_margin_must_cover_one_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # A call started just before the stop may take a whole timeout: it must end before Lambda's deadline
    monkeypatch.setenv("PROMPTDROP_REQUEST_TIMEOUT_S", "120")
    monkeypatch.setenv("PROMPTDROP_DEADLINE_MARGIN_S", "60")
    with pytest.raises(
        ConfigurationError,
        match=r"PROMPTDROP_DEADLINE_MARGIN_S='60': must exceed PROMPTDROP_REQUEST_TIMEOUT_S \(120 s\)",
    ):
        get_settings()
    monkeypatch.setenv("PROMPTDROP_REQUEST_TIMEOUT_S", "30")
    assert get_settings().deadline_margin_s == 60.0


def test_the_defaults_leave_room_for_the_last_call() -> None:
    settings = get_settings()
    assert settings.deadline_margin_s >= settings.request_timeout_s + 10
