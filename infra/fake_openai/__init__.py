"""A small, fast, OpenAI-compatible fake of the OpenAI API for the demo, the tests and the benchmark.

It answers ``POST /v1/chat/completions`` with a realistic ``chat.completion`` body whose content is a
deterministic function of the prompt (``"Echo: "`` + the first 200 characters of the last user message), so
a test can tell which answer belongs to which prompt, and it can misbehave on demand:

* latency (``latency_ms`` +/- ``jitter_ms``) applied with ``asyncio.sleep``;
* OpenAI-style request and token rate limits (``rpm`` / ``tpm``): continuously refilled token buckets whose
  capacity is the per-minute limit, ``x-ratelimit-*`` headers on every completion response, and real HTTP 429s
  with ``retry-after`` / ``retry-after-ms`` once a bucket is empty;
* random, seeded fault injection (500s, 429s, hangs, malformed JSON bodies);
* deterministic per-prompt fault markers in the last user message, so a test can target one prompt:
  ``[[fail:500x2]]`` (the first 2 times this exact prompt is received answer 500, then succeed; works for
  any status, e.g. ``[[fail:429x1]]``, ``[[fail:503x3]]``, ``[[fail:408x1]]``), ``[[hang:x1]]``,
  ``[[malformed:x1]]``, and without a count -- always -- ``[[fail:400]]``, ``[[fail:401]]``,
  ``[[fail:404]]``, ``[[fail:422]]``, ``[[fail:500]]``, ``[[quota]]`` (429 ``insufficient_quota``).
  Several counted markers in one prompt apply one after the other. Markers are counted per exact prompt
  text, after authentication and rate limiting, and ``POST /stats/reset`` forgets the counts;
* an optional API key check (``require_api_key``) answering 401 ``invalid_api_key``.

``GET /stats`` returns counters (requests, per-status counts, injected faults, token totals and ``prompts``:
sha256-hex[:16] of the last user message -> times received), ``POST /stats/reset`` clears them (and refills
the rate-limit buckets), ``GET /health`` answers 200.

Use it from Python with :func:`serve_in_thread` (a daemon thread running its own event loop) or
:func:`create_app`, or from a shell: ``python -m infra.fake_openai --port 8089 --latency-ms 200``,
which prints ``fake OpenAI API listening on http://HOST:PORT/v1`` once it accepts connections.

Modules: :mod:`~infra.fake_openai.config` (the settings), :mod:`~infra.fake_openai.server` (HTTP, counters,
the server in a thread), :mod:`~infra.fake_openai.endpoints` (each endpoint's request and answer),
:mod:`~infra.fake_openai.validation` (the 400s), :mod:`~infra.fake_openai.limits` (rate limits),
:mod:`~infra.fake_openai.faults` (markers and random faults), :mod:`~infra.fake_openai.cli` (the command line).
"""

from infra.fake_openai.cli import config_from_args, main
from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.limits import format_duration
from infra.fake_openai.server import (
    FakeOpenAIState,
    RunningFakeOpenAI,
    app_state,
    create_app,
    prompt_hash,
    serve_in_thread,
)

__all__ = [
    "FakeOpenAIConfig",
    "FakeOpenAIState",
    "RunningFakeOpenAI",
    "app_state",
    "config_from_args",
    "create_app",
    "format_duration",
    "main",
    "prompt_hash",
    "serve_in_thread",
]
