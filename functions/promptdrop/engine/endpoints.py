"""Each endpoint promptdrop sends, in one place: what it takes, what bounds its answer, how its answer reads.

One :class:`EndpointSpec` per :class:`~.request.Endpoint`, asked by everyone who needs a fact of it:
the parser (required field, short form, default model, refused parameters, the token estimate),
the cost guard and ``promptdrop estimate`` (:meth:`EndpointSpec.output_bound`), the engine's answer
checks (:mod:`.answers`: the answer's list, object, usage, text, structured output) and the outputs
and ``promptdrop results`` (``EndpointSpec.text``, :meth:`EndpointSpec.shown`: the readers in :mod:`.readers`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import readers
from .request import Endpoint

__all__ = [
    "DEFAULT_OUTPUT_ESTIMATE",
    "MAX_TOKEN_ESTIMATE",
    "SPECS",
    "EndpointSpec",
    "StructuredOutput",
    "parameters",
    "spec_of",
    "spec_of_answer",
]

Body = dict[str, Any]

# Output tokens assumed when a request sets no limit (the model's own maximum, unknown here): the
# tokens/min estimate, the cost guard's worst case and ``estimate``'s default. Corrected by the
# real usage after the call.
DEFAULT_OUTPUT_ESTIMATE = 256
# Estimates above this are refused by any tokens/min limit anyway (request_too_large); capped so that
# a max_tokens of 10**400 stays a number the limiter's and the price's float arithmetic can take.
MAX_TOKEN_ESTIMATE = 10**12


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """Where a request asks for JSON: its format object's path in the body, the schema's path in that object."""

    format_at: tuple[str, ...]
    schema_at: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What one endpoint takes, bounds and answers."""

    endpoint: Endpoint
    sdk_types: tuple[str, tuple[str, ...]]  # the SDK's request types (module, TypedDicts): its parameters
    # The field a body cannot go without (besides model); the SDK's TypedDicts do not say (their
    # annotations are strings, so ``__required_keys__`` is empty). Responses may take a stored prompt instead.
    required: str | None
    default_model: str | None  # None: PROMPTDROP_MODEL (text generation); else the endpoint's usual model
    # The short form: the field its prompt becomes, where its system goes (None: refused), what it may give instead.
    prompt_field: str
    system_field: str | None
    prompt_fields: str  # what a short form of it gives its prompt as (for the error message)
    text_fields: tuple[str, ...]  # where its input text is (its prompt, input, messages, instructions)
    # What bounds its answer: the parameters that bound output tokens (the first given wins), the
    # API's own limit when none is (None: the model's maximum), and whether it answers any tokens at all.
    output_limits: tuple[str, ...]
    output_default: int | None
    answers_tokens: bool
    refused: tuple[tuple[str, str], ...]  # (parameter, why): a line setting it (truthy) fails at parse time
    # Its answer: the list it must hold, what it is called, its "object", its usage's field names.
    answer_list: str
    answer_name: str
    answer_object: str | None
    usage_fields: tuple[str, str]
    structured: StructuredOutput | None
    choices: Callable[[Body], int]  # answers billed per request (n, best_of, prompts)
    framing: Callable[[Body], int]  # tokens of message framing, beyond the text
    text: Callable[[Body], str | None]  # the answer's text (.out.txt, .out.csv): None when it has none
    summary: Callable[[Body], str | None]  # the answer as shown to a person (promptdrop results)

    def output_bound(self, body: Body) -> int | None:
        """The most output tokens the request may be billed for (its limit, or the API's default, times
        its choices); 0 for an endpoint that answers none; None when it sets no limit."""
        if not self.answers_tokens:
            return 0
        limit = next((body[name] for name in self.output_limits if _count(body.get(name)) is not None), None)
        limit = self.output_default if limit is None else limit
        return None if limit is None else min(MAX_TOKEN_ESTIMATE, max(0, limit) * self.choices(body))

    def input_estimate(self, body: Body) -> int:
        """Input tokens, estimated from the text alone (``promptdrop estimate``): ~4 characters a token
        of its prompt, input, messages or instructions (content parts' text too), plus its framing."""
        return sum(_text_chars(body.get(name)) for name in self.text_fields) // 4 + self.framing(body)

    def token_estimate(self, body: Body, text_len: int) -> tuple[int, int]:
        """(the tokens the request may use, of which output): ~4 characters a token of its ``text_len``
        (no tokenizer download at run time) plus its framing plus its output bound (else the default)."""
        bound = self.output_bound(body)
        output = DEFAULT_OUTPUT_ESTIMATE if bound is None else bound
        return min(MAX_TOKEN_ESTIMATE, text_len // 4 + self.framing(body) + output), output

    def shown(self, body: Body) -> str:
        """The answer in a few words for a person: its text, a moderation's verdict, an embedding's size."""
        return self.summary(body) or "-"


@functools.cache
def parameters(endpoint: Endpoint) -> frozenset[str]:
    """Every request parameter of ``endpoint``, as the installed OpenAI SDK declares them.

    Taken from the SDK's own request types, so a parameter the API adds arrives with an SDK
    upgrade instead of a hand-kept list; computed once, on first use (not at import: cold start).
    """
    module_name, type_names = SPECS[endpoint].sdk_types
    module = importlib.import_module(module_name)
    names: set[str] = set()
    for type_name in type_names:
        params = getattr(module, type_name)
        names |= params.__required_keys__ | params.__optional_keys__
    return frozenset(names)


def spec_of(endpoint: Endpoint) -> EndpointSpec:
    return SPECS[endpoint]


def spec_of_answer(body: Body) -> EndpointSpec | None:
    """The spec of the endpoint that gave ``body`` (an answer read back from the journal or the outputs),
    told by its ``object`` (a moderation, which has none, by its ``results``); None: not an answer."""
    found = _BY_OBJECT.get(str(body.get("object")))
    if found is None and isinstance(body.get("results"), list):
        return SPECS[Endpoint.MODERATIONS]
    return found


# -- what a request asks for ----------------------------------------------------------------------------------


def _n(body: Body) -> int:
    return max(1, _count(body.get("n")) or 1)


def _completions_choices(body: Body) -> int:
    """best_of choices are generated (and billed) server-side, n returned: per prompt of a list of them."""
    prompt = body.get("prompt")
    many = isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt)
    prompts = len(prompt) if many and isinstance(prompt, list) else 1
    return max(_n(body), _count(body.get("best_of")) or 1) * prompts


def _one(body: Body) -> int:
    return 1


def _per_message(body: Body) -> int:
    messages = body.get("messages")
    return 4 * len(messages) if isinstance(messages, list) else 0


def _responses_framing(body: Body) -> int:
    return 4


def _text_chars(value: object) -> int:
    """Characters of text in a prompt, an input, messages or content parts (whatever the endpoint)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(part) for part in value)
    if isinstance(value, dict):  # a message (its content) or a content part (its text)
        return _text_chars(value.get("content")) + _text_chars(value.get("text"))
    return 0


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _none(body: Body) -> int:
    return 0


_STREAM = ("stream", '"stream": true is not supported in a batch; remove it')
_CHAT_COMPLETION = ("prompt_tokens", "completion_tokens")

SPECS: dict[Endpoint, EndpointSpec] = {
    Endpoint.CHAT: EndpointSpec(
        endpoint=Endpoint.CHAT,
        sdk_types=(
            "openai.types.chat.completion_create_params",
            ("CompletionCreateParamsNonStreaming", "CompletionCreateParamsStreaming"),
        ),
        required="messages",
        default_model=None,
        prompt_field="messages",
        system_field="messages",
        prompt_fields='"prompt" or "messages"',
        text_fields=("messages",),
        output_limits=("max_completion_tokens", "max_tokens"),  # the newer name wins
        output_default=None,
        answers_tokens=True,
        refused=(_STREAM,),
        answer_list="choices",
        answer_name="a chat completion",
        answer_object="chat.completion",
        usage_fields=_CHAT_COMPLETION,
        structured=StructuredOutput(("response_format",), ("json_schema", "schema")),
        choices=_n,
        framing=_per_message,
        text=readers.chat_text,
        summary=readers.chat_summary,
    ),
    Endpoint.RESPONSES: EndpointSpec(
        endpoint=Endpoint.RESPONSES,
        sdk_types=(
            "openai.types.responses.response_create_params",
            ("ResponseCreateParamsNonStreaming", "ResponseCreateParamsStreaming"),
        ),
        required=None,
        default_model=None,
        prompt_field="input",
        system_field="instructions",
        prompt_fields='"prompt", "messages" or "input"',
        text_fields=("input", "instructions"),
        output_limits=("max_output_tokens",),
        output_default=None,
        answers_tokens=True,
        refused=(
            _STREAM,
            (
                "background",
                '"background": true is not supported: its answer would come later, by polling, and promptdrop '
                "waits for each answer in the call; remove it",
            ),
        ),
        answer_list="output",
        answer_name="a response",
        answer_object="response",
        usage_fields=("input_tokens", "output_tokens"),
        structured=StructuredOutput(("text", "format"), ("schema",)),
        choices=_one,
        framing=_responses_framing,
        text=readers.responses_text,
        summary=readers.responses_summary,
    ),
    Endpoint.EMBEDDINGS: EndpointSpec(
        endpoint=Endpoint.EMBEDDINGS,
        sdk_types=("openai.types.embedding_create_params", ("EmbeddingCreateParams",)),
        required="input",
        default_model="text-embedding-3-small",
        prompt_field="input",
        system_field=None,
        prompt_fields='"prompt" or "input"',
        text_fields=("input",),
        output_limits=(),
        output_default=None,
        answers_tokens=False,
        refused=(_STREAM,),
        answer_list="data",
        answer_name="an embeddings list",
        answer_object="list",
        usage_fields=_CHAT_COMPLETION,  # prompt_tokens alone
        structured=None,
        choices=_one,
        framing=_none,
        text=readers.nothing,
        summary=readers.embeddings_summary,
    ),
    Endpoint.COMPLETIONS: EndpointSpec(
        endpoint=Endpoint.COMPLETIONS,
        sdk_types=(
            "openai.types.completion_create_params",
            ("CompletionCreateParamsNonStreaming", "CompletionCreateParamsStreaming"),
        ),
        required="prompt",
        default_model="gpt-3.5-turbo-instruct",
        prompt_field="prompt",
        system_field=None,
        prompt_fields='"prompt"',
        text_fields=("prompt",),
        output_limits=("max_tokens",),
        output_default=16,  # the legacy endpoint's own default
        answers_tokens=True,
        refused=(_STREAM,),
        answer_list="choices",
        answer_name="a text completion",
        answer_object="text_completion",
        usage_fields=_CHAT_COMPLETION,
        structured=None,
        choices=_completions_choices,
        framing=_none,
        text=readers.completion_text,
        summary=readers.completion_text,
    ),
    Endpoint.MODERATIONS: EndpointSpec(
        endpoint=Endpoint.MODERATIONS,
        sdk_types=("openai.types.moderation_create_params", ("ModerationCreateParams",)),
        required="input",
        default_model="omni-moderation-latest",
        prompt_field="input",
        system_field=None,
        prompt_fields='"prompt" or "input"',
        text_fields=("input",),
        output_limits=(),
        output_default=None,
        answers_tokens=False,
        refused=(_STREAM,),
        answer_list="results",
        answer_name="a moderation",
        answer_object=None,  # a moderation's answer has no "object"
        usage_fields=_CHAT_COMPLETION,  # none: moderations are not billed by token
        structured=None,
        choices=_one,
        framing=_none,
        text=readers.nothing,
        summary=readers.moderations_summary,
    ),
}
# An answer's "object" -> its endpoint's spec (moderations have none).
_BY_OBJECT = {spec.answer_object: spec for spec in SPECS.values() if spec.answer_object is not None}
