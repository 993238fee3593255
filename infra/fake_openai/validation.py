"""What a request body must be before the fake answers it, and the 400s the real API sends when it is not.

The accepted body parameters of each endpoint, with their JSON types, are read from the installed ``openai``
SDK's ``*CreateParams`` TypedDicts at import time (the SDK is generated from the API's own specification, and
the product sends what that SDK can send): a newer SDK widens the fake with it, no table to keep. What the
SDK does not say -- value ranges, and ``model``/``input`` being required by Responses -- is kept by hand
below (``_RANGES``, ``_EXTRA_REQUIRED``); a test checks that every name there is one the SDK knows.

The checks are the real API's, in its order, with its messages: an unknown parameter, a missing required
one, a wrong JSON type (``invalid_type``), a string outside a closed set (``invalid_value``), a number out of
range. Types are checked one level deep (the parameter itself), not as a full JSON schema of the API.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import typing_extensions
from openai.types import completion_create_params as _legacy
from openai.types import embedding_create_params as _embeddings
from openai.types import moderation_create_params as _moderations
from openai.types.chat import completion_create_params as _chat
from openai.types.responses import EasyInputMessageParam
from openai.types.responses import response_create_params as _responses

__all__ = [
    "CHAT_ROLES",
    "CHAT_SPEC",
    "COMPLETIONS_SPEC",
    "EMBEDDINGS_SPEC",
    "MODERATIONS_SPEC",
    "RESPONSES_ROLES",
    "RESPONSES_SPEC",
    "SDK_MODELS",
    "SPECS",
    "ApiError",
    "BodySpec",
    "ParamSpec",
    "check_body",
    "check_messages",
    "invalid",
    "invalid_type",
    "invalid_value",
    "json_kind",
    "loads",
    "missing",
    "params_of",
]

#: JSON value kinds, and how the API names them in messages.
_KIND_NAMES: Final = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_ANY: Final = "any"
_SEQUENCES: Final = (list, tuple, set, frozenset, Iterable, Sequence)
_MAPPINGS: Final = (dict, Mapping)


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error answer: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 400
    type: str = "invalid_request_error"


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(message, param, code)


def missing(param: str) -> ApiError:
    return ApiError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


_KIND_OF_TYPE: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_kind(value: object) -> str:
    """The JSON kind of a parsed value: string, integer, number, boolean, array, object or null."""
    kind = _KIND_OF_TYPE.get(type(value))  # what json.loads makes: the exact types (the hot path)
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _expected(kinds: Iterable[str]) -> str:
    named = [_KIND_NAMES[k] for k in ("string", "integer", "number", "boolean", "array", "object") if k in kinds]
    if not named:
        return "null"
    if len(named) == 1:
        return named[0]
    return "one of " + ", ".join(named[:-1]) + (", or " if len(named) > 2 else " or ") + named[-1]


def invalid_type(param: str, kinds: Iterable[str], value: object) -> ApiError:
    """``Invalid type for 'temperature': expected a decimal, but got a string instead.``"""
    got = _KIND_NAMES[json_kind(value)]
    message = f"Invalid type for '{param}': expected {_expected(kinds)}, but got {got} instead."
    return ApiError(message, param, "invalid_type")


def invalid_value(param: str, value: str, choices: Iterable[str]) -> ApiError:
    """``Invalid value: 'huge'. Supported values are: 'low', 'medium', and 'high'.``"""
    quoted = [f"'{c}'" for c in sorted(choices)]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + (", and " if len(quoted) > 2 else " and ")
    listed += quoted[-1] if len(quoted) > 1 else ""
    return ApiError(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")


# -- the parameters, from the SDK ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One body parameter: the JSON kinds it accepts and, if it is a closed set of strings, which ones."""

    kinds: frozenset[str]  # contains "any" when the SDK's type says nothing checkable
    choices: frozenset[str] | None  # None: any string (when "string" is a kind at all)
    required: bool
    #: ``kinds`` plus what they imply (an integer is a valid decimal); every kind for "any".
    accepted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        accepted = set(_KIND_NAMES) if _ANY in self.kinds else set(self.kinds)
        if "number" in accepted:
            accepted.add("integer")
        object.__setattr__(self, "accepted", frozenset(accepted))


def _describe(hint: Any, kinds: set[str], choices: set[str], free: list[bool]) -> None:
    """Add the JSON kinds ``hint`` accepts to ``kinds``; string literals to ``choices``; ``free[0]`` if any str."""
    origin = typing.get_origin(hint)
    if origin in (typing.Required, typing.NotRequired, typing.Annotated):
        _describe(typing.get_args(hint)[0], kinds, choices, free)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            _describe(arg, kinds, choices, free)
    elif origin is Literal:
        for value in typing.get_args(hint):
            kind = json_kind(value)
            kinds.add(kind)
            if kind == "string":
                choices.add(value)
    elif hint is type(None):
        kinds.add("null")
    elif hint is bool:
        kinds.add("boolean")
    elif hint is int:
        kinds.add("integer")
    elif hint is float:
        kinds.add("number")
    elif hint is str:
        kinds.add("string")
        free[0] = True
    elif origin in _SEQUENCES or hint in _SEQUENCES:
        kinds.add("array")
    elif origin in _MAPPINGS or hint in _MAPPINGS or typing_extensions.is_typeddict(hint):
        kinds.add("object")
    else:  # object, Any, something new: accept it rather than refuse what the API may take
        kinds.add(_ANY)


def _param_spec(hints: Sequence[Any]) -> ParamSpec:
    """One parameter as the union of its types in the given TypedDicts (streaming and not, for ``stream``)."""
    kinds: set[str] = set()
    choices: set[str] = set()
    free = [False]
    for hint in hints:
        _describe(hint, kinds, choices, free)
    required = all(typing.get_origin(h) is typing.Required for h in hints)
    return ParamSpec(frozenset(kinds), None if free[0] or not choices else frozenset(choices), required)


def params_of(*typeddicts: type) -> dict[str, ParamSpec]:
    """The body parameters of the given ``*CreateParams`` TypedDicts (their union), from their type hints."""
    hints = [typing.get_type_hints(td, include_extras=True) for td in typeddicts]
    names = list(dict.fromkeys(name for each in hints for name in each))
    return {name: _param_spec([each[name] for each in hints if name in each]) for name in names}


@dataclass(frozen=True, slots=True)
class BodySpec:
    """What one endpoint accepts."""

    name: str
    params: Mapping[str, ParamSpec]
    #: (min, max) of numeric parameters, inclusive; None: unbounded on that side.
    ranges: Mapping[str, tuple[float | None, float | None]]
    #: Newer endpoints (Responses) name one unknown parameter; older ones list them all.
    unknown_style: Literal["argument", "parameter"] = "argument"
    required: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "required", tuple(name for name, p in self.params.items() if p.required))


_RANGES: Final[dict[str, dict[str, tuple[float | None, float | None]]]] = {
    "chat.completions": {
        "temperature": (0, 2),
        "top_p": (0, 1),
        "presence_penalty": (-2, 2),
        "frequency_penalty": (-2, 2),
        "n": (1, 128),
        "max_tokens": (1, None),
        "max_completion_tokens": (1, None),
        "top_logprobs": (0, 20),
    },
    "responses": {
        "temperature": (0, 2),
        "top_p": (0, 1),
        "max_output_tokens": (16, None),
        "top_logprobs": (0, 20),
        "max_tool_calls": (1, None),
    },
    "completions": {
        "temperature": (0, 2),
        "top_p": (0, 1),
        "presence_penalty": (-2, 2),
        "frequency_penalty": (-2, 2),
        "n": (1, 128),
        "max_tokens": (0, None),
        "logprobs": (0, 5),
        "best_of": (0, 20),
    },
    "embeddings": {"dimensions": (1, None)},
    "moderations": {},
}
#: Required by the API though the SDK's TypedDict marks them optional (Responses can take a stored prompt).
_EXTRA_REQUIRED: Final = {"responses": ("model",)}


def _spec(name: str, *typeddicts: type, unknown_style: Literal["argument", "parameter"] = "argument") -> BodySpec:
    params = params_of(*typeddicts)
    for required in _EXTRA_REQUIRED.get(name, ()):
        params[required] = ParamSpec(params[required].kinds, params[required].choices, True)
    return BodySpec(name, params, _RANGES[name], unknown_style)


CHAT_SPEC: Final = _spec(
    "chat.completions", _chat.CompletionCreateParamsNonStreaming, _chat.CompletionCreateParamsStreaming
)
RESPONSES_SPEC: Final = _spec(
    "responses",
    _responses.ResponseCreateParamsNonStreaming,
    _responses.ResponseCreateParamsStreaming,
    unknown_style="parameter",
)
EMBEDDINGS_SPEC: Final = _spec("embeddings", _embeddings.EmbeddingCreateParams)
COMPLETIONS_SPEC: Final = _spec(
    "completions", _legacy.CompletionCreateParamsNonStreaming, _legacy.CompletionCreateParamsStreaming
)
MODERATIONS_SPEC: Final = _spec("moderations", _moderations.ModerationCreateParams)
SPECS: Final = (CHAT_SPEC, RESPONSES_SPEC, EMBEDDINGS_SPEC, COMPLETIONS_SPEC, MODERATIONS_SPEC)


def _message_roles() -> frozenset[str]:
    """The ``role`` values of the chat message TypedDicts the SDK knows (system, user, assistant, tool, ...)."""
    roles: set[str] = set()
    [messages] = typing.get_args(typing.get_type_hints(_chat.CompletionCreateParamsBase)["messages"])
    for message in typing.get_args(messages):
        kinds: set[str] = set()
        _describe(typing.get_type_hints(message)["role"], kinds, roles, [False])
    return frozenset(roles)


CHAT_ROLES: Final = _message_roles()


def _responses_roles() -> frozenset[str]:
    """The ``role`` values of a Responses input message (user, assistant, system, developer)."""
    roles: set[str] = set()
    _describe(typing.get_type_hints(EasyInputMessageParam)["role"], set(), roles, [False])
    return frozenset(roles)


RESPONSES_ROLES: Final = _responses_roles()


def _model_names() -> tuple[str, ...]:
    """Every model the SDK names for the five endpoints (what ``GET /v1/models`` lists)."""
    names: set[str] = set()
    for spec_params in (
        _chat.CompletionCreateParamsBase,
        _responses.ResponseCreateParamsBase,
        _embeddings.EmbeddingCreateParams,
        _legacy.CompletionCreateParamsBase,
        _moderations.ModerationCreateParams,
    ):
        _describe(typing.get_type_hints(spec_params, include_extras=True)["model"], set(), names, [False])
    return tuple(sorted(names))


SDK_MODELS: Final = _model_names()
#: Roles whose message must have content (an assistant's may be null, with tool calls or a refusal).
_CONTENT_REQUIRED: Final = frozenset({"system", "developer", "user", "tool"})


# -- the checks ---------------------------------------------------------------------------------------------------

_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant)  # made once: json.loads makes one a call


def loads(raw: bytes) -> object | ApiError:
    """The request body as JSON, or the API's 400. ``NaN``/``Infinity`` are not JSON: refused as the API does."""
    try:
        body: object = _DECODER.decode(raw.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError
        return invalid(_BAD_JSON)
    return body


def _number(value: float) -> str:
    return json.dumps(value)


def _range_error(param: str, decimal: bool, value: float, low: float | None, high: float | None) -> ApiError | None:
    what = "decimal" if decimal else "integer"
    if low is not None and value < low:
        return invalid(
            f"Invalid '{param}': {what} below minimum value. Expected a value >= {_number(low)}, "
            f"but got {_number(value)} instead.",
            param,
            f"{what}_below_min_value",
        )
    if high is not None and value > high:
        return invalid(
            f"Invalid '{param}': {what} above maximum value. Expected a value <= {_number(high)}, "
            f"but got {_number(value)} instead.",
            param,
            f"{what}_above_max_value",
        )
    return None


def check_body(spec: BodySpec, body: object) -> ApiError | None:
    """The first thing wrong with ``body`` at its top level, as the real API reports it; ``None`` if nothing."""
    if not isinstance(body, dict):
        return invalid("The request body must be a JSON object.")
    params = spec.params
    unknown = [name for name in body if name not in params]
    if unknown:
        if spec.unknown_style == "parameter":
            return invalid(f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
        plural = "s" if len(unknown) > 1 else ""
        return invalid(f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}")
    for name in spec.required:
        if name not in body or (name == "model" and body[name] == ""):
            if name == "model" and spec.unknown_style == "argument":
                return invalid("you must provide a model parameter")
            return missing(name)
    for name, value in body.items():
        param = params[name]
        kind = json_kind(value)
        if kind not in param.accepted:
            return invalid_type(name, param.kinds, value)
        if kind == "string" and param.choices is not None and value not in param.choices:
            return invalid_value(name, value, param.choices)
        bounds = spec.ranges.get(name)
        if bounds is not None and kind in ("integer", "number") and math.isfinite(value):
            error = _range_error(name, "number" in param.kinds, value, *bounds)
            if error is not None:
                return error
    return None


def check_messages(messages: list[Any]) -> ApiError | None:
    """Chat ``messages``: a non-empty array of objects with a known role and string or array content."""
    if not messages:
        return invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return invalid_type(where, ("object",), message)
        role = message.get("role")
        if role is None:
            return missing(f"{where}.role")
        if not isinstance(role, str):
            return invalid_type(f"{where}.role", ("string",), role)
        if role not in CHAT_ROLES:
            return invalid_value(f"{where}.role", role, CHAT_ROLES)
        content = message.get("content")
        if content is None:
            if role in _CONTENT_REQUIRED:
                return missing(f"{where}.content")
        elif not isinstance(content, str | list):
            return invalid_type(f"{where}.content", ("string", "array"), content)
    return None
