"""A job runner over in-memory ports and a fake API, the engine real: what the unit tests of ``jobs/`` drive.

``world`` builds :class:`World`: the fakes of :mod:`tests.unit.jobs.fakes`, a fake API answering
every prompt (or what a test scripts), and :meth:`World.runner` — the product's own
:class:`~promptdrop.jobs.JobRunner` with the engine's real :class:`~promptdrop.engine.dispatch.Dispatcher`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from promptdrop.engine.client import Reply
from promptdrop.engine.dispatch import Dispatcher
from promptdrop.engine.model_limiters import ModelLimiters
from promptdrop.jobs import FileRef, JobResult, JobRunner
from promptdrop.jobs.ports import AnswerCacheStore
from promptdrop.messages import FileFailure, PromptFailure, UnitMessage
from promptdrop.records import JobRecord
from promptdrop.settings import Settings

from tests.fakes import FakeClock
from tests.unit.jobs.fakes import MemoryBatches, MemoryBus, MemoryJournal, MemoryQueues, MemoryStore

BUCKET = "in"
DLQ = "dlq"
WORK = "work"


class FakeApi:
    """Answers each prompt with its own text reversed; ``fail_on[prompt]`` raises instead."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.fail_on: dict[str, Exception] = {}
        self.before: Callable[[str], None] | None = None  # called with each prompt before it is answered

    async def __call__(self, path: str, body: bytes) -> Reply:
        data = json.loads(body)
        prompt = str(data["messages"][-1]["content"])
        self.prompts.append(prompt)
        if self.before is not None:
            self.before(prompt)
        if prompt in self.fail_on:
            raise self.fail_on[prompt]
        answer = {
            "id": f"chatcmpl-{len(self.prompts)}",
            "object": "chat.completion",
            "model": data.get("model", "gpt-4o-mini"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": prompt[::-1]}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return Reply(200, httpx2.Headers({"x-request-id": f"req_{len(self.prompts)}"}), json.dumps(answer).encode())


def lines(*prompts: str, **extra: Any) -> str:
    """A .jsonl of short-form lines, custom ids ``p1``, ``p2``…"""
    return "".join(json.dumps({"custom_id": f"p{i}", "prompt": p, **extra}) + "\n" for i, p in enumerate(prompts, 1))


@dataclass
class World:
    clock: FakeClock = field(default_factory=FakeClock)
    store: MemoryStore = field(default_factory=MemoryStore)
    queues: MemoryQueues = field(default_factory=MemoryQueues)
    bus: MemoryBus = field(default_factory=MemoryBus)
    api: FakeApi = field(default_factory=FakeApi)
    batches: MemoryBatches = field(default_factory=MemoryBatches)
    journal: MemoryJournal = field(init=False)

    def __post_init__(self) -> None:
        self.journal = MemoryJournal(self.clock)

    def settings(self, **env: Any) -> Settings:
        values: dict[str, Any] = {"table": "t", "dlq_url": DLQ, "work_queue_url": WORK, "max_concurrency": 4}
        return Settings(**(values | env))

    def runner(self, *, cache: AnswerCacheStore | None = None, route: str = "", **env: Any) -> JobRunner:
        """The product's runner on this world's ports (``cache``: an answer cache, keyed by ``route``)."""
        settings = self.settings(**env)

        def dispatcher() -> Dispatcher:
            return Dispatcher(
                self.api,
                limiter=ModelLimiters(),
                max_concurrency=settings.max_concurrency,
                max_attempts=2,
                backoff_base_s=0.0,
                rng=random.Random(0),
            )

        return JobRunner(
            settings=settings,
            store=self.store,
            journal=self.journal,
            messages=self.queues,
            dispatcher_factory=dispatcher,
            publisher=self.bus,
            batches=self.batches,
            cache=cache,
            route=route,
        )

    async def upload(self, key: str, body: str, runner: JobRunner | None = None, **metadata: str) -> JobResult:
        """Put ``body`` at ``key`` and run it as its S3 notification would."""
        self.store.put(BUCKET, key, body, **metadata)
        return await (runner or self.runner()).run_file(FileRef(BUCKET, key))

    def job(self, result: JobResult) -> JobRecord:
        assert result.job_id is not None
        return self.journal.job(result.job_id)

    def dead_letters(self) -> list[PromptFailure | FileFailure | UnitMessage]:
        return list(self.queues.on(DLQ))

    def file_failures(self) -> list[FileFailure]:
        return [m for m in self.queues.on(DLQ) if isinstance(m, FileFailure)]

    def outputs(self, key: str, suffix: str) -> list[dict[str, Any]]:
        return self.store.jsonl(BUCKET, f"results/{key}{suffix}")

    def summary(self, key: str) -> dict[str, Any]:
        return json.loads(self.store.text(BUCKET, f"results/{key}.summary.json"))


@pytest.fixture
def world() -> World:
    return World()
