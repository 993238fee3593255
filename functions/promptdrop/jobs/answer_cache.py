"""The answer cache across jobs: a request answered once is not paid for again.

Which requests (``PROMPTDROP_CACHE``, per upload ``promptdrop-cache``): ``off``; ``deterministic``
(the default) — requests with ``temperature: 0``, and every embeddings and moderations request;
``all``. A request's key is a hash of its route (the base URL of the API its model is routed to:
``routes.py``), its endpoint and its body in
canonical JSON (keys sorted, ``1.0`` written ``1``; ``custom_id`` is not part of the body), so the
same request to the same API finds the same answer, from any file and any job.

In a run, the cache is one stage among the others (:mod:`.admission`), before the cost guard:

* keys are looked up ahead of the stages, 100 lines at a time (one ``BatchGetItem``);
* a line whose answer is kept is recorded as answered — its ``.out.jsonl`` line the answer as the
  API gave it, ``cached: true`` on its item and in the summary, no tokens spent, nothing sent;
* identical eligible lines in one run are sent once: the first is sent, the others wait for its
  outcome and are recorded with it (an answer as ``cached``; a failure as their own failure);
* an answer is kept (after it is journaled) unless it was cut off, refused, filtered, failed
  validation (those are failures already) or is too large for an item.

A cache that cannot be read or written never fails a run: the lookup or the write is logged and
the run carries on as if nothing were kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import replace
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger

from ..engine.answers import finish_reason
from ..engine.dispatch import Outcome
from ..engine.request import Endpoint, Request
from ..formats import Parsed
from ..jsonsafe import dumps
from ..records import CachedAnswer, FailureCode, RequestRecord
from ..settings import Settings
from .admission import Verdict
from .ports import AnswerCacheStore
from .recorder import Recorder
from .run_result import now_iso
from .source import header_choice

__all__ = ["CACHE_METADATA", "CachePolicy", "RouteOf", "RunCache", "cache_key", "policy_of"]

logger = Logger(service="promptdrop", child=True)

CACHE_METADATA = "promptdrop-cache"
_WINDOW = 100  # lines looked up at once: one BatchGetItem
_KEEP_AT = 25  # answers kept at once: one BatchWriteItem
_DETERMINISTIC_ENDPOINTS = frozenset({Endpoint.EMBEDDINGS, Endpoint.MODERATIONS})
_COMPLETE = frozenset({None, "stop", "completed"})  # finish reasons of an answer that is whole
# The route a model's answers come from (its API's base URL): asked only of the requests the policy caches.
RouteOf = Callable[[str], str]


class CachePolicy(StrEnum):
    OFF = "off"
    DETERMINISTIC = "deterministic"
    ALL = "all"


def policy_of(settings: Settings, metadata: Mapping[str, str]) -> CachePolicy:
    """The file's cache policy: the upload's ``promptdrop-cache``, else ``PROMPTDROP_CACHE``."""
    return header_choice(metadata, CACHE_METADATA, CachePolicy, settings.cache, FailureCode.INVALID_CACHE)


def cache_key(route: str | RouteOf, request: Request, policy: CachePolicy) -> str | None:
    """The request's key in the cache, or None when the policy does not cache it."""
    if policy is CachePolicy.OFF:
        return None
    deterministic_by_endpoint = request.endpoint in _DETERMINISTIC_ENDPOINTS
    if policy is CachePolicy.DETERMINISTIC and not deterministic_by_endpoint and b'"temperature"' not in request.body:
        return None  # sampled: most requests of most files, told without parsing the body
    try:
        body = json.loads(request.body, parse_float=_number)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if policy is CachePolicy.DETERMINISTIC and not deterministic_by_endpoint:
        temperature = body.get("temperature")
        if isinstance(temperature, bool) or temperature != 0:
            return None
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if not isinstance(route, str):
        route = route(request.model_name())
    text = f"{route}\n{request.endpoint.value}\n{canonical}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _number(text: str) -> float | int:
    """A JSON number as the API reads it: ``0.0`` and ``0`` are one value (so one key)."""
    value = float(text)
    return int(value) if value.is_integer() else value


class RunCache:
    """One run's use of the cache; ``async with`` it around the run (what it keeps is written at the end)."""

    def __init__(self, store: AnswerCacheStore, policy: CachePolicy, route: str | RouteOf, recorder: Recorder) -> None:
        self._store = store
        self._policy = policy
        self._route = route
        self._recorder = recorder
        self._keys: dict[int, str] = {}  # line -> key, for the lines looked up and not yet staged
        self._hits: dict[str, CachedAnswer] = {}
        self._leaders: dict[str, int] = {}  # key -> the line sent for it in this run
        self._leader_keys: dict[int, str] = {}
        self._followers: dict[str, list[Request]] = {}
        self._keep: list[CachedAnswer] = []
        self._looking = True
        self.hits = 0  # lines recorded from the cache (kept answers and identical lines)

    async def __aenter__(self) -> RunCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._write()

    def stop_looking(self) -> None:
        """No more lookups: the run's input is only being counted now."""
        self._looking = False

    async def ahead(self, parsed: AsyncIterator[Parsed]) -> AsyncGenerator[Parsed]:
        """``parsed``, with the keys of its eligible requests looked up a window ahead."""
        window: list[Parsed] = []
        failure: Exception | None = None
        try:
            async for item in parsed:
                window.append(item)
                if len(window) >= _WINDOW:
                    await self._look_up(window)
                    for each in window:
                        yield each
                    window = []
        except Exception as exc:  # the input failed mid-window: what was read before it still goes on first
            failure = exc
        await self._look_up(window)
        for each in window:
            yield each
        if failure is not None:
            raise failure

    async def _look_up(self, window: list[Parsed]) -> None:
        if not self._looking:
            return
        wanted: list[str] = []
        for item in window:
            if isinstance(item, Request):
                key = cache_key(self._route, item, self._policy)
                if key is not None:
                    self._keys[item.line] = key
                    if key not in self._hits and key not in self._leaders:
                        wanted.append(key)
        if not wanted:
            return
        try:
            self._hits.update(await self._store.get_many(wanted))
        except Exception:  # the cache spares calls; it is never worth failing a run
            logger.warning("answer cache unreachable: these lines are sent", exc_info=True)

    async def __call__(self, item: Parsed) -> Verdict:
        """The stage: a kept answer recorded, an identical line deferred to the first, else on."""
        if not isinstance(item, Request):
            return Verdict.NEXT
        key = self._keys.pop(item.line, None)
        if key is None:
            return Verdict.NEXT
        hit = self._hits.get(key)
        if hit is not None:
            self.hits += 1
            await self._recorder.cached(item, hit)
            return Verdict.SETTLED
        if key in self._leaders:
            self._followers.setdefault(key, []).append(item)
            return Verdict.SETTLED
        self._leaders[key] = item.line
        self._leader_keys[item.line] = key
        return Verdict.NEXT

    async def settled(self, outcome: Outcome, record: RequestRecord) -> None:
        """A sent request's outcome is on ``record``: keep its answer, and record the lines that waited for it."""
        key = self._leader_keys.pop(outcome.request.line, None)
        if key is None:
            return
        del self._leaders[key]
        followers = self._followers.pop(key, [])
        answer = _keepable(key, outcome, record)
        if answer is not None:
            self._hits[key] = answer  # later lines of this run find it too
            self._keep.append(answer)
            if len(self._keep) >= _KEEP_AT:
                await self._write()
        for follower in followers:
            self.hits += 1
            if outcome.error is None and outcome.response is not None:
                await self._recorder.cached(follower, answer or _as_kept(key, outcome.response))
            else:  # the same request failed: so does this line, with its own dead letter
                await self._recorder.outcome(replace(outcome, request=follower, attempts=0, discarded_tokens=(0, 0)))

    async def _write(self) -> None:
        kept, self._keep = self._keep, []
        if not kept:
            return
        try:
            await self._store.put_many(kept, now_iso())
        except Exception:  # a later run pays for these again, that is all
            logger.warning("answer cache not written: %d answer(s) not kept", len(kept), exc_info=True)


def _as_kept(key: str, response: dict[str, Any]) -> CachedAnswer:
    model = response.get("model")
    return CachedAnswer(key, dumps(response), model if isinstance(model, str) else None, finish_reason(response))


def _keepable(key: str, outcome: Outcome, record: RequestRecord) -> CachedAnswer | None:
    """The answer to keep, or None: a failure, or an answer cut off, refused or too large. Its text
    is the record's (serialized once, by the recorder), which holds none when the answer went to S3
    for want of room in an item — too large for a cache item too."""
    response = outcome.response
    if not record.succeeded or response is None or record.response is None:
        return None
    if record.finish_reason not in _COMPLETE or _refused(response):
        return None
    return CachedAnswer(key, record.response, record.model, record.finish_reason)


def _refused(body: dict[str, Any]) -> bool:
    for choice in body.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and message.get("refusal"):
            return True
    return any(
        isinstance(part, dict) and part.get("type") == "refusal"
        for item in body.get("output") or ()
        if isinstance(item, dict)
        for part in item.get("content") or ()
    )
