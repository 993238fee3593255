"""X-Ray spans when the function is traced (template parameter ``Tracing``): one per run, one per call it makes.

Off — the default, and always outside Lambda (local runs, tests) — nothing here imports the X-Ray SDK
(a third of a second at cold start) or wraps anything: the clients are the plain ones, a run's span is
an empty context, and tracing costs nothing. On (Powertools' ``POWERTOOLS_TRACE_DISABLED`` false, in
Lambda), Powertools' Tracer opens a subsegment for each run, sampled as X-Ray sampled the invocation
(an unsampled one gets X-Ray's no-op subsegment, and no call spans at all).

Inside a run, S3, DynamoDB, SQS, EventBridge and OpenAI calls run concurrently on one thread, while the
X-Ray SDK keeps one stack of open subsegments per thread and ends "the current one": its aiobotocore
patch would end one call's subsegment with another's timing and parent. So call spans never touch
that stack: each is attached to its run's subsegment directly, found through a context variable every
task of the run inherits, and streamed to the daemon as soon as it closes. AWS calls get theirs from
botocore's own ``before-call``/``after-call`` events on each client (no global patching); API calls
from a wrapper around the engine's sender. A run keeps at most :data:`CALL_SPANS_PER_RUN` call spans —
a 15-minute run makes tens of thousands of calls, far past what one trace usefully holds — and notes
how many it left out (metadata ``call_spans_dropped`` on the run's subsegment).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

__all__ = ["CALL_SPANS_PER_RUN", "enabled", "run_span", "trace_aws_calls", "traced_sender"]

CALL_SPANS_PER_RUN = 250
_ANNOTATION_MAX_CHARS = 500  # an annotation is an index entry: a long S3 key (up to 1,024 bytes) is cut short
_CONTEXT_KEY = "promptdrop_span"  # where a botocore call's span waits between its two events
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(slots=True)
class _Run:
    subsegment: Any  # the run's aws_xray_sdk Subsegment (sampled)
    left: int = CALL_SPANS_PER_RUN
    dropped: int = 0
    # Call spans begun and not yet ended: a call cancelled mid-flight gets no after-call event, and an
    # open child would keep its run's span from ever being sent. Closed when the run ends.
    open: set[Any] = field(default_factory=set)


_run: ContextVar[_Run | None] = ContextVar("promptdrop_run_span", default=None)


def enabled() -> bool:
    """Tracing is on: asked for (``POWERTOOLS_TRACE_DISABLED`` false) and in Lambda, where the X-Ray daemon
    listens — Powertools' own rule (outside Lambda, or under ``sam local``, its Tracer is off too)."""
    if resolve_truthy_env_var_choice(env=os.getenv("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not os.getenv("AWS_SAM_LOCAL")


@functools.cache
def _tracer() -> Tracer:
    from aws_lambda_powertools import Tracer  # only when on: it imports the X-Ray SDK

    # No auto-patching: it would patch aiobotocore with the stack-based subsegments described above.
    return Tracer(service="promptdrop", auto_patch=False)


def _recorder() -> Any:
    """The X-Ray SDK's recorder behind the Tracer (its subsegment calls are not in Powertools' typed surface)."""
    return _tracer().provider


@contextlib.asynccontextmanager
async def run_span(name: str, **annotations: str) -> AsyncIterator[None]:
    """A subsegment around one run (runs are sequential: this one may use the SDK's stack), its
    ``annotations`` searchable in X-Ray (``job_id``…); the calls made inside become its children."""
    if not enabled():
        yield
        return
    async with _recorder().in_subsegment_async(name=f"## {name}") as subsegment:
        if subsegment is None or not subsegment.sampled:
            yield
            return
        for key, value in annotations.items():
            subsegment.put_annotation(key, value[:_ANNOTATION_MAX_CHARS])
        run = _Run(subsegment)
        token = _run.set(run)
        try:
            yield
        finally:
            _run.reset(token)
            for span in list(run.open):
                _end(run, span)
            if run.dropped:
                subsegment.put_metadata("call_spans_dropped", run.dropped, "promptdrop")


def _begin(name: str, namespace: str) -> tuple[_Run, Any] | None:
    """A call's subsegment under the current run's (and that run), or None: no run traced, or its spans used up."""
    run = _run.get()
    if run is None:
        return None
    if run.left <= 0:
        run.dropped += 1
        return None
    run.left -= 1
    from aws_xray_sdk.core.models.subsegment import Subsegment

    span = Subsegment(name, namespace, run.subsegment.parent_segment)
    run.subsegment.add_subsegment(span)  # sets its parent id, counts it on the segment
    run.open.add(span)
    return run, span


def _end(run: _Run, span: Any, error: BaseException | None = None, status: int | None = None) -> None:
    """Close a call's span with its HTTP ``status`` (a 429 flags a throttle, a 4xx an error, a 5xx a fault)."""
    if span not in run.open:
        return  # ended already, by its run's end (a closed span takes nothing more)
    run.open.discard(span)
    if status is not None:
        span.put_http_meta("status", status)
    if isinstance(error, Exception):  # not a cancellation: the call itself failed
        span.add_exception(error, [], remote=True)
    span.close()
    _recorder().stream_subsegments()  # sent now: a run's spans never pile up in memory


class Send(Protocol[T_co]):
    """The engine's sender (``engine.dispatch.Sender``), as far as a span needs it."""

    def __call__(self, path: str, body: bytes, timeout_s: float | None = None) -> Awaitable[T_co]: ...


def traced_sender(send: Send[T], base_url: str) -> Send[T]:
    """The engine's sender with a span per API call (named after the host of ``base_url``, the API's), when
    tracing is on; ``send`` itself otherwise."""
    if not enabled():
        return send
    host, base = urlsplit(base_url).hostname or base_url, base_url.rstrip("/")

    async def traced(path: str, body: bytes, timeout_s: float | None = None) -> T:
        begun = _begin(host, "remote")
        if begun is None:
            return await send(path, body, timeout_s)
        run, span = begun
        span.put_http_meta("method", "POST")
        span.put_http_meta("url", base + path)
        try:
            reply = await send(path, body, timeout_s)
        except BaseException as exc:
            status = getattr(exc, "status_code", None)  # the SDK's status errors carry it
            _end(run, span, exc, status if isinstance(status, int) else None)
            raise
        _end(run, span, status=getattr(reply, "status_code", 200))
        return reply

    return traced


def trace_aws_calls(client: Any) -> None:
    """A span per call of an aiobotocore ``client`` (its service's name, namespace ``aws``), when tracing is on."""
    if not enabled():
        return
    events = client.meta.events
    service = client.meta.service_model.endpoint_prefix
    region = client.meta.region_name

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        begun = _begin(service, "aws")
        if begun is not None:
            begun[1].set_aws({"operation": model.name, "region": region})
            context[_CONTEXT_KEY] = begun

    def after(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        begun = context.pop(_CONTEXT_KEY, None)
        if begun is None:
            return
        run, span = begun
        request_id = (parsed.get("ResponseMetadata") or {}).get("RequestId")
        if request_id:
            span.aws["request_id"] = request_id
        _end(run, span, status=http_response.status_code)

    def failed(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
        begun = context.pop(_CONTEXT_KEY, None)
        if begun is not None:
            run, span = begun
            _end(run, span, exception)

    events.register("before-call", before)
    events.register("after-call", after)
    events.register("after-call-error", failed)
