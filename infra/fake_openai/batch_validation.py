"""Validating a batch's input file, as the API does before it runs one (``validating`` → ``failed``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from infra.fake_openai.batch_records import BY_PATH, UNFINISHED, Batch
from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.endpoints import Ask, Endpoint
from infra.fake_openai.validation import ApiError

__all__ = ["Requests", "validate"]

Requests = list[tuple[str, Endpoint, Ask]]  # (custom_id, its endpoint, what it asks), in file order


def validate(batch: Batch, content: bytes, config: FakeOpenAIConfig, others: Iterable[Batch]) -> Requests | None:
    """The batch's requests, or None when it fails validation (its ``errors`` set)."""
    errors: list[dict[str, Any]] = []
    asks: Requests = []
    seen: set[str] = set()
    models: set[str] = set()
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) > config.batch_max_requests:
        message = f"The batch has {len(lines):,} requests; at most {config.batch_max_requests:,} are allowed."
        errors.append({"code": "too_many_requests", "message": message, "param": None, "line": None})
    for number, raw in enumerate(lines, start=1):
        problem = _line_problem(raw, batch.endpoint, seen)
        if isinstance(problem, dict):
            errors.append({**problem, "line": number})
            continue
        custom_id, endpoint, ask = problem
        models.add(ask.model)
        asks.append((custom_id, endpoint, ask))
        batch.enqueued_tokens += ask.input_tokens + (ask.max_output_tokens or config.default_max_tokens) * ask.outputs
    if len(models) > 1:
        message = f"A batch's requests must all use the same model; found {', '.join(sorted(models))}."
        errors.append({"code": "mismatched_model", "message": message, "param": "body.model", "line": None})
    batch.total = len(lines)
    batch.model = next(iter(models)) if len(models) == 1 else None
    if not errors and batch.model is not None:
        errors += _token_limit(batch, config, others)
    batch.errors = errors or None
    return None if errors else asks


def _line_problem(raw: bytes, endpoint: str, seen: set[str]) -> dict[str, Any] | tuple[str, Endpoint, Ask]:
    try:
        line = json.loads(raw)
    except ValueError:
        return {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "param": None}
    if not isinstance(line, dict) or not all(key in line for key in ("custom_id", "method", "url", "body")):
        message = "Each line must be an object with custom_id, method, url and body."
        return {"code": "invalid_request", "message": message, "param": None}
    custom_id = line["custom_id"]
    if not isinstance(custom_id, str) or custom_id in seen:
        message = f"The custom_id {custom_id!r} is used more than once (or is not a string)."
        return {"code": "duplicate_custom_id", "message": message, "param": "custom_id"}
    seen.add(custom_id)
    if line["method"] != "POST":
        return {"code": "invalid_method", "message": "Only POST is supported.", "param": "method"}
    if line["url"] != endpoint:
        message = f"The url {line['url']!r} does not match the batch's endpoint {endpoint!r}."
        return {"code": "mismatched_endpoint", "message": message, "param": "url"}
    target = BY_PATH[endpoint]
    ask = target.parse(line["body"])
    if isinstance(ask, ApiError):
        return {"code": ask.code or "invalid_request", "message": ask.message, "param": f"body.{ask.param}"}
    return custom_id, target, ask


def _token_limit(batch: Batch, config: FakeOpenAIConfig, others: Iterable[Batch]) -> list[dict[str, Any]]:
    limit = config.batch_enqueued_tokens
    if limit is None:
        return []
    enqueued = sum(
        other.enqueued_tokens
        for other in others
        if other is not batch and other.model == batch.model and other.status in UNFINISHED
    )
    if enqueued + batch.enqueued_tokens <= limit:
        return []
    message = (
        f"Enqueued token limit reached for {batch.model} in organization org-fake. Limit: {limit:,} enqueued "
        "tokens. Please try again once some in_progress batches have been completed."
    )
    return [{"code": "token_limit_exceeded", "message": message, "param": None, "line": None}]
