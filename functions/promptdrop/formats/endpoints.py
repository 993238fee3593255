"""What the input formats know of each endpoint: its parameters (from the SDK), what its short
form becomes, the field it cannot go without, its default model and its token estimate.

A short-form line (``{"prompt": "..."}``) names its endpoint with ``"endpoint"``, else takes the
file's (the upload's metadata ``promptdrop-endpoint``, else ``PROMPTDROP_ENDPOINT``, else chat).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from ..engine.request import Endpoint

__all__ = [
    "ENDPOINT_FIELD",
    "ENDPOINT_METADATA",
    "default_model",
    "estimate_cost",
    "parameters",
    "required_field",
    "short_form_body",
]

# The short form's field naming a line's endpoint, and the upload metadata naming the file's.
ENDPOINT_FIELD = "endpoint"
ENDPOINT_METADATA = "promptdrop-endpoint"

# The SDK's request types of each endpoint (module, TypedDicts): its parameters, as the SDK declares them.
_SDK_PARAMS = {
    Endpoint.CHAT: (
        "openai.types.chat.completion_create_params",
        ("CompletionCreateParamsNonStreaming", "CompletionCreateParamsStreaming"),
    ),
    Endpoint.RESPONSES: (
        "openai.types.responses.response_create_params",
        ("ResponseCreateParamsNonStreaming", "ResponseCreateParamsStreaming"),
    ),
    Endpoint.EMBEDDINGS: ("openai.types.embedding_create_params", ("EmbeddingCreateParams",)),
    Endpoint.COMPLETIONS: (
        "openai.types.completion_create_params",
        ("CompletionCreateParamsNonStreaming", "CompletionCreateParamsStreaming"),
    ),
    Endpoint.MODERATIONS: ("openai.types.moderation_create_params", ("ModerationCreateParams",)),
}
# The field a body cannot go without (besides model); the SDK's TypedDicts do not say (their
# annotations are strings, so ``__required_keys__`` is empty). Responses may take a stored prompt instead.
_REQUIRED = {
    Endpoint.CHAT: "messages",
    Endpoint.EMBEDDINGS: "input",
    Endpoint.COMPLETIONS: "prompt",
    Endpoint.MODERATIONS: "input",
}
# The model a request naming none is sent to: PROMPTDROP_MODEL for text generation, else the
# endpoint's usual model (a chat model would be refused there).
_DEFAULT_MODELS = {
    Endpoint.EMBEDDINGS: "text-embedding-3-small",
    Endpoint.COMPLETIONS: "gpt-3.5-turbo-instruct",
    Endpoint.MODERATIONS: "omni-moderation-latest",
}
# Output tokens assumed for the tokens/min estimate when a request sets no limit (corrected by the
# real usage after the call); the legacy completions endpoint's own default is 16.
DEFAULT_OUTPUT_ESTIMATE = 256
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# Estimates above this are refused by any tokens/min limit anyway (request_too_large); capped so
# that a max_tokens of 10**300 stays an integer the limiter's float arithmetic can take.
_MAX_COST = 10**12


@functools.cache
def parameters(endpoint: Endpoint) -> frozenset[str]:
    """Every request parameter of ``endpoint``, as the installed OpenAI SDK declares them.

    Taken from the SDK's own request types, so a parameter the API adds arrives with an SDK
    upgrade instead of a hand-kept list; computed once, on first use (not at import: cold start).
    """
    module_name, type_names = _SDK_PARAMS[endpoint]
    module = importlib.import_module(module_name)
    names: set[str] = set()
    for type_name in type_names:
        params = getattr(module, type_name)
        names |= params.__required_keys__ | params.__optional_keys__
    return frozenset(names)


def required_field(endpoint: Endpoint) -> str | None:
    return _REQUIRED.get(endpoint)


def default_model(endpoint: Endpoint, configured: str) -> str:
    return _DEFAULT_MODELS.get(endpoint, configured)


def short_form_body(
    endpoint: Endpoint, prompt: str | None, messages: list[dict[str, Any]] | None, system: str | None
) -> tuple[dict[str, Any], str | None]:
    """The fields a short form's ``prompt``/``messages``/``system`` become on ``endpoint``; or why they cannot."""
    if endpoint is Endpoint.CHAT:
        turns = messages if messages is not None else [{"role": "user", "content": prompt}]
        return {"messages": [{"role": "system", "content": system}, *turns] if system is not None else turns}, None
    if endpoint is Endpoint.RESPONSES:
        body: dict[str, Any] = {"input": messages if messages is not None else prompt}
        if system is not None:
            body["instructions"] = system
        return body, None
    unused = [name for name, value in (("messages", messages), ("system", system)) if value is not None]
    if unused:
        return {}, f"{' and '.join(unused)}: not taken by {endpoint.value} (give a prompt)"
    return {"prompt" if endpoint is Endpoint.COMPLETIONS else "input": prompt}, None


def estimate_cost(endpoint: Endpoint, body: dict[str, Any], text_len: int) -> int:
    """Tokens the request may use, for the tokens/min bucket: ~4 characters a token of input (no
    tokenizer download at run time) plus the most it may answer. Corrected with the real usage."""
    n = body.get("n") or 1
    n = n if isinstance(n, int) else 1
    if endpoint is Endpoint.CHAT:
        most = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_ESTIMATE
        framing = 4 * len(body.get("messages") or ())
    elif endpoint is Endpoint.RESPONSES:
        most, framing, n = body.get("max_output_tokens") or DEFAULT_OUTPUT_ESTIMATE, 4, 1
    elif endpoint is Endpoint.COMPLETIONS:
        prompt = body.get("prompt")
        prompts = len(prompt) if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else 1
        max_tokens = body.get("max_tokens")
        most, framing = _COMPLETIONS_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens, 0
        n *= max(1, prompts)
    else:  # embeddings and moderations answer nothing that counts as output
        most, framing = 0, 0
    budget = most * n if isinstance(most, int) else 0
    return min(_MAX_COST, text_len // 4 + framing + max(0, budget))
