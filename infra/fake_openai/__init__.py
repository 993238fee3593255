"""A small, fast fake of the OpenAI API, as strict as the real one, for the demo, the tests and the benchmark.

It answers every text endpoint of the Batch API -- ``POST /v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings``, ``/v1/completions``, ``/v1/moderations`` -- with realistic bodies and each endpoint's own
``usage``, and ``GET /v1/models``. Answers are deterministic functions of the prompt (``"Echo: "`` + its first
200 characters, in batches repeated to ``batch_answer_chars`` if set; embeddings are unit vectors hashed from the
input), so a test can tell which answer belongs to which prompt. A request asking for structured output (chat
``response_format``, Responses ``text.format``) is answered with JSON valid against its schema.

It refuses what the real API refuses, with its 400 bodies: unknown body parameters, wrong JSON types, values
outside their set or range, missing required fields, bad messages and formats, non-strict strict schemas,
``NaN``. The accepted parameters are read from the installed ``openai`` SDK (see :mod:`.validation`).

It misbehaves on demand:

* latency (``latency_ms`` +/- ``jitter_ms``) applied with ``asyncio.sleep``;
* OpenAI-style request and token rate limits, per model as OpenAI's are (``rpm``/``tpm`` for every model,
  ``model_limits={"gpt-4o": (rpm, tpm)}`` for one): continuously refilled token buckets whose capacity is the
  per-minute limit, ``x-ratelimit-*`` headers on every answer, and real HTTP 429s with ``retry-after`` /
  ``retry-after-ms`` once a bucket is empty;
* random, seeded fault injection (500s, 429s, hangs, malformed JSON bodies);
* deterministic per-prompt markers in the prompt text (chat: the last user message; Responses: the input's
  last user message or string; embeddings, completions, moderations: their inputs joined), so a test can
  target one prompt: ``[[fail:500x2]]`` (the first 2 times this exact prompt is received answer 500, then
  succeed; any status, e.g. ``[[fail:429x1]]``, ``[[fail:503x3]]``), ``[[hang:x1]]``, ``[[malformed:x1]]``,
  and without a count -- always -- ``[[fail:400]]``, ``[[fail:404]]``, ``[[quota]]`` (429
  ``insufficient_quota``); and answers that arrive but are wrong: ``[[output:invalid_json]]``,
  ``[[output:schema_mismatch]]``, ``[[output:truncated]]``, ``[[output:refusal]]``,
  ``[[output:content_filter]]``, ``[[output:deep]]`` (JSON nested 5,000 deep), and answers with nothing in
  them: ``[[output:queued]]``, ``[[output:in_progress]]``, ``[[output:failed]]`` (a Responses status),
  ``[[output:empty]]`` (an empty ``choices``/``output``/``data``/``results``), ``[[output:bad_model]]`` (a list
  as ``model``) (with a count: ``[[output:refusal:x2]]``). Several counted markers in one
  prompt apply one after the other. Markers are counted per exact prompt text, after authentication,
  validation and rate limiting, and ``POST /stats/reset`` forgets the counts;
* an optional API key check (``require_api_key``) answering 401 ``invalid_api_key``; per instance, the key
  as a bearer token, in Azure's ``api-key`` header, or a Bedrock token checked by its form (``auth``, :mod:`.auth`).

``GET /stats`` returns counters (requests, per-status counts, injected faults, token totals, requests per model
and ``prompts``: :func:`prompt_hash` of the prompt text -> times received), ``POST /stats/reset`` clears them
(and refills the rate-limit buckets), ``GET /health`` answers 200.

Use it from Python with :func:`serve_in_thread` (a daemon thread running its own event loop) or
:func:`create_app`, or from a shell: ``python -m infra.fake_openai --port 8089 --latency-ms 200``,
which prints ``fake OpenAI API listening on http://HOST:PORT/v1`` once it accepts connections.

Modules: :mod:`.config` (the settings), :mod:`.server` (HTTP), :mod:`.state` (the counters), :mod:`.running`
(the server in a thread),
:mod:`.endpoints` (each endpoint's request and answer), :mod:`.validation` (the 400s), :mod:`.structured`
(JSON answers to a schema), :mod:`.limits` (rate limits), :mod:`.faults` (markers and random faults),
:mod:`.misshapes` (answers that are not answers),
:mod:`.cli` (the command line), :mod:`.batches` (the Batch API: ``/v1/files`` and ``/v1/batches``, with
:mod:`.batch_records` and :mod:`.batch_validation`).
"""

from infra.fake_openai.cli import config_from_args, main
from infra.fake_openai.config import FakeOpenAIConfig, ModelLimit
from infra.fake_openai.limits import format_duration
from infra.fake_openai.running import RunningFakeOpenAI, serve_in_thread
from infra.fake_openai.server import app_state, create_app
from infra.fake_openai.state import FakeOpenAIState, prompt_hash

__all__ = [
    "FakeOpenAIConfig",
    "FakeOpenAIState",
    "ModelLimit",
    "RunningFakeOpenAI",
    "app_state",
    "config_from_args",
    "create_app",
    "format_duration",
    "main",
    "prompt_hash",
    "serve_in_thread",
]
