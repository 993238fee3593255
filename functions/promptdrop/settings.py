"""Configuration: every ``PROMPTDROP_*`` variable, validated once, read lazily.

Never read at import time (a cold start must not fail before the logger exists, and tests set the
environment after importing): call :func:`get_settings`, which caches the validated object.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .routes import AuthKind, Route, RouteTable

__all__ = ["ENV_PREFIX", "MAX_COUNT", "ConfigurationError", "Settings", "get_settings"]

ENV_PREFIX = "PROMPTDROP_"
# The endpoints a short-form line may be sent to (engine.request.Endpoint; a unit test holds them in step).
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations")
_MAX_SHOWN_VALUE = 80
_JOURNAL_S = 10.0  # after the last call: journal it, write a continuation
# The largest count or amount a setting (or an upload's budget) may give: a quadrillion is past any
# real budget or limit, and below 2**53, so it stays exact as a float — a 400-digit number would
# overflow the float arithmetic of the pace and the cost guard (README, "Limits").
MAX_COUNT = 10**15


class ConfigurationError(ValueError):
    """The function's environment is not valid: the message names each variable at fault and why."""


class Settings(BaseSettings):
    """The function's environment. Names are part of the contract (README, "Configuration")."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    table: str = Field(description="DynamoDB table holding job and request items.")
    dlq_url: str = Field(description="SQS dead-letter queue URL for failed prompts and files.")
    work_queue_url: str | None = Field(
        default=None, description="SQS work queue URL (continuations, shards, redrives)."
    )
    output_bucket: str | None = Field(default=None, description="Bucket for outputs; default: the input's.")
    output_prefix: str = Field(default="results/", description="Key prefix of every output file.")
    input_prefix: str = Field(default="", description="Only keys under this prefix are processed.")
    model: str = Field(default="gpt-4o-mini", description="Model for requests that name none.")
    max_concurrency: int = Field(default=100, ge=1, le=5000, description="Requests in flight at most.")
    # The ACCOUNT's limits per model (OpenAI's are per organization and model), not one invocation's:
    # invocations running at once divide them among themselves through the table (share_limits).
    rpm: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="The account's requests/min for each model (default: learned from headers).",
    )
    tpm: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="The account's tokens/min for each model (default: learned from headers).",
    )
    share_limits: bool = Field(
        default=True,
        description="Divide each model's limits among the invocations running at once (a budget item in the table).",
    )
    max_attempts: int = Field(default=6, ge=1, le=50, description="Tries per request, first included.")
    # allow_inf_nan=False on every float: "inf" and "nan" parse as floats, and an infinite
    # timeout or lease would hang a run instead of failing it.
    request_timeout_s: float = Field(
        default=120.0, gt=0, le=MAX_COUNT, allow_inf_nan=False, description="Timeout of one API call."
    )
    openai_secret_arn: str | None = Field(
        default=None, description="Secrets Manager secret with the OpenAI key (else OPENAI_API_KEY)."
    )
    secret_ttl_s: float = Field(
        default=300.0,
        gt=0,
        le=MAX_COUNT,
        description="Re-read the key from the secret after this long (and after a 401).",
    )
    deadline_margin_s: float = Field(
        default=130.0,
        ge=0,
        le=MAX_COUNT,
        allow_inf_nan=False,
        description="Stop dispatching this long before the Lambda deadline (more than one request timeout).",
    )
    shard_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        le=MAX_COUNT,
        description="A .jsonl larger than this is split into parallel shards.",
    )
    request_ttl_days: int = Field(
        default=0, ge=0, le=3650, description="Request items expire this many days after written (0: kept)."
    )
    event_bus: str | None = Field(
        default=None, description="EventBridge bus a job's completion event is published on (unset: none)."
    )
    max_continuations: int = Field(
        default=48, ge=1, le=1000, description="Continuations one unit may take before its file fails."
    )
    endpoint: str = Field(
        default=ENDPOINTS[0],
        description="Endpoint of short-form lines that name none (an upload's promptdrop-endpoint overrides it).",
    )
    output_attempts: int = Field(
        default=3, ge=1, le=10, description="Answers asked for at most when one is unusable (bad JSON, cut off…)."
    )
    text_policy: Literal["accept", "strict"] = Field(
        default="accept", description="A plain-text answer cut off or filtered: an answer (accept) or a failure."
    )
    budget_usd: float | None = Field(
        default=None, gt=0, le=MAX_COUNT, allow_inf_nan=False, description="A file's budget in USD (unset: no limit)."
    )
    budget_tokens: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="A file's budget in tokens (unset: no limit)."
    )
    max_requests: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Requests one file may send (unset: no limit)."
    )
    # How a file's requests are sent (an upload's promptdrop-mode overrides it): realtime; flex — the
    # models that offer the flex tier at its price, refused flex falling back (engine/flex.py); batch —
    # the provider's Batch API (jobs/batch_mode.py); auto — batch, then flex and standard by a deadline.
    mode: Literal["realtime", "flex", "batch", "auto"] = Field(
        default="realtime",
        description="realtime (standard tier), flex (half price where offered, slower), batch (the Batch API, "
        "half price, up to 24 h) or auto (batch while the deadline allows, then flex, then standard).",
    )
    fallback: Literal["realtime", "fail"] = Field(
        default="realtime",
        description="Lines a provider batch did not finish (expired, cancelled, failed): sent now, or failed.",
    )
    deadline: str = Field(
        default="24h", description="auto mode: when the answers are due (a duration such as 6h, or an ISO time)."
    )
    batch_max_requests: int = Field(
        default=50_000, ge=1, le=50_000, description="Requests per provider batch (the Batch API's limit: 50,000)."
    )
    batch_max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        le=200 * 1024 * 1024,
        description="Bytes per Batch API input file (the API's limit: 200 MB).",
    )
    batch_poll_s: float = Field(
        default=60.0,
        ge=1.0,
        le=900.0,
        allow_inf_nan=False,
        description="Seconds before a provider batch's first check; later checks back off to 15 minutes.",
    )
    flex_attempts: int = Field(
        default=3, ge=1, le=20, description="Flex refusals (capacity short, a timeout) before the fallback."
    )
    flex_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=900.0,
        allow_inf_nan=False,
        description="Timeout of one flex call (OpenAI advises up to 15 minutes); one that could outlive the "
        "invocation is left to the continuation.",
    )
    flex_fallback: Literal["standard", "fail"] = Field(
        default="standard", description="A request flex keeps refusing: sent at the standard tier, or failed."
    )
    cache: Literal["off", "deterministic", "all"] = Field(
        default="deterministic",
        description="Answers reused across jobs: off, deterministic (temperature 0, embeddings, moderations), all.",
    )
    cache_ttl_days: int = Field(default=30, ge=1, le=3650, description="Days an answer is kept for reuse.")
    # JSON: a list of routes (routes.py; README, "Routes"). Unset: one route, today's, for every model.
    routes: Annotated[tuple[Route, ...], NoDecode] = Field(
        default=(), description="The routing table: which API, auth and limits each model goes to."
    )
    lease_s: float = Field(
        default=120.0,
        gt=0,
        le=MAX_COUNT,
        allow_inf_nan=False,
        description="How long a crashed run keeps others off its file (renewed while alive).",
    )

    @field_validator(
        "output_bucket",
        "work_queue_url",
        "openai_secret_arn",
        "event_bus",
        "rpm",
        "tpm",
        "budget_usd",
        "budget_tokens",
        "max_requests",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CloudFormation cannot omit a variable conditionally without ceremony; "" and "0" mean unset.
        return None if value in ("", "0", 0) else value

    @field_validator("routes", mode="before")
    @classmethod
    def _table_from_json(cls, value: object) -> object:
        # Decoded here rather than by pydantic-settings: "" (CloudFormation's empty parameter) is no
        # table, and bad JSON is reported like any other bad value, naming the variable.
        if not isinstance(value, str):
            return value
        if not value.strip():
            return ()
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f'not JSON ({exc}); a list of routes, as in the README\'s "Routes"') from None

    @field_validator("routes")
    @classmethod
    def _one_table(cls, value: tuple[Route, ...], info: ValidationInfo) -> tuple[Route, ...]:
        RouteTable(value)  # the names unique
        default_secret = info.data.get("openai_secret_arn")
        for route in value:
            if route.auth is AuthKind.API_KEY and not (route.secret_arn or default_secret):
                raise ValueError(
                    f"route {route.name!r}: auth 'api-key' needs its key's secret: set its secret_arn "
                    f"(or {ENV_PREFIX}OPENAI_SECRET_ARN)"
                )
        return value

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, value: str) -> str:
        path = value if value.startswith("/v1/") else "/v1" + value
        if path not in ENDPOINTS:
            raise ValueError(f"not an endpoint promptdrop sends; use one of {', '.join(ENDPOINTS)}")
        return path

    @field_validator("output_prefix", "input_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(f"S3 key prefixes do not start with '/': use {value.lstrip('/')!r}")
        return value

    @field_validator("deadline_margin_s")
    @classmethod
    def _margin_covers_a_call(cls, value: float, info: ValidationInfo) -> float:
        # After the stop, calls in flight finish (nothing new is sent or retried): the last one may
        # take a whole request timeout, and the function must still journal it and queue the rest.
        timeout = info.data.get("request_timeout_s")
        if isinstance(timeout, float) and value < timeout + _JOURNAL_S:
            raise ValueError(
                f"must exceed {ENV_PREFIX}REQUEST_TIMEOUT_S ({timeout:g} s) by {_JOURNAL_S:g} s at least — "
                "a call started before the stop must finish before Lambda's deadline"
            )
        return value

    @field_validator("output_prefix")
    @classmethod
    def _output_prefix_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty: outputs written beside inputs would trigger new jobs")
        return value


def _problem(error: dict[str, object]) -> str:
    """One validation error, named by the variable a user sets (pydantic names the field)."""
    loc = error.get("loc") or ("?",)
    field = str(loc[0]) if isinstance(loc, tuple) else "?"
    variable = ENV_PREFIX + field.upper()
    if error.get("type") == "missing":
        info = Settings.model_fields.get(field)
        what = info.description if info is not None and info.description else "required"
        return f"{variable} is not set ({what.rstrip('.')})"
    ctx = error.get("ctx")
    cause = ctx.get("error") if isinstance(ctx, dict) and error.get("type") == "value_error" else None
    value = str(error.get("input"))
    if len(value) > _MAX_SHOWN_VALUE:
        value = value[:_MAX_SHOWN_VALUE] + "…"
    return f"{variable}={value!r}: {cause or error.get('msg')}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The validated settings, built on first use (``get_settings.cache_clear()`` to re-read).

    Raises :class:`ConfigurationError` naming each variable at fault (``PROMPTDROP_MAX_CONCURRENCY``,
    not the field ``max_concurrency``), so the Lambda error says what to change.
    """
    try:
        return Settings()  # required fields come from the environment
    except ValidationError as exc:
        problems = "; ".join(_problem(dict(error)) for error in exc.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None
