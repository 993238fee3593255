"""Structured output: JSON schemas compiled once each, and an answer's text checked against one.

Validators come from ``fastjsonschema``, which compiles a schema to Python code once: validating
an answer then costs microseconds (measured against ``jsonschema``: about 25x less CPU a
validation, and about 95 ms less to import on a cold start; the README's "Structured output"
section has the figures). It is imported on first use only: a file without structured output
never pays for it.

A schema comes from the user's request, so compiling one is kept safe: it is checked first
(:mod:`.schema_check`: its shape, size, references and regular expressions), a ``$ref`` to anything but
the schema itself (a URL, a file) is refused instead of fetched, defaults are never written into
an answer, and at most :data:`MAX_SCHEMAS` compiled validators are kept (least recently used
dropped). The cache key is the schema's canonical JSON (keys sorted), so the same schema written
twice is compiled once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .schema_check import schema_problem

__all__ = ["ANY_OBJECT", "MAX_SCHEMAS", "SchemaError", "canonical", "check_schema", "validate"]

MAX_SCHEMAS = 256
# What a ``json_object`` request asks for: any JSON object.
ANY_OBJECT = '{"type":"object"}'


class SchemaError(ValueError):
    """A schema that cannot be compiled (the request fails alone, before it is sent)."""


class _NoRemoteRefs(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema's handlers by URI scheme: every scheme refused (it would otherwise fetch the URI)."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return self._refuse

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    @staticmethod
    def _refuse(uri: str) -> Any:
        raise SchemaError(f"$ref {uri!r}: only references within the schema itself (#/...) are supported")


def canonical(schema: object) -> str:
    """The schema's canonical JSON: the key its compiled validator is cached under."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=MAX_SCHEMAS)
def _compiled(schema_json: str) -> Callable[[Any], Any]:
    import fastjsonschema  # on first use: a cold start without schemas never loads it

    schema = json.loads(schema_json)
    problem = schema_problem(schema, schema_json)  # before compiling: bounded, and safe to run
    if problem is not None:
        raise SchemaError(problem)
    try:
        validate: Callable[[Any], Any] = fastjsonschema.compile(
            schema, handlers=_NoRemoteRefs(), use_default=False, detailed_exceptions=True
        )
    except SchemaError:
        raise
    except Exception as exc:  # the user's schema, whatever the compiler trips on: that line fails
        raise SchemaError(f"the JSON schema cannot be used: {type(exc).__name__}: {exc}"[:500]) from None
    return validate


def check_schema(schema_json: str) -> None:
    """Compile the schema now (cached): :class:`SchemaError` if it cannot be."""
    _compiled(schema_json)


def validate(schema_json: str, value: Any) -> str | None:
    """None when ``value`` matches the schema, else the validator's message (``data.priority must be one of …``)."""
    import fastjsonschema  # already loaded by _compiled

    try:
        _compiled(schema_json)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return str(exc.message)
    except RecursionError:  # an answer nested deeper than a recursive schema can follow
        return "the answer nests too deep to be checked against the schema"
    return None


def cache_info() -> Any:
    """How many schemas were compiled and reused (``functools`` cache statistics)."""
    return _compiled.cache_info()


__all__ += ["cache_info"]
