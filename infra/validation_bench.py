"""``make bench``'s scenario 6: what validating structured output costs.

Two measures:

* the validator alone, in this process: CPU per answer to parse an answer's JSON and validate it
  against a typical schema, with the library promptdrop uses (``fastjsonschema``, compiled once) and
  with ``jsonschema`` (a validator built once), plus each library's import time in a fresh
  interpreter (the cold-start cost);
* the engine end to end (``python -m infra.bench_contenders promptdrop``, as scenario 1: 200 ms latency,
  concurrency 500): the same prompts with and without a ``json_schema`` ``response_format``, so
  every answer of the second run is parsed and validated.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RESPONSE_FORMAT", "SCHEMA", "validator_costs"]

# A typical extraction schema (strict: every property required, no others).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "priority", "tags", "customer", "score", "due"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
        "customer": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "name"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "due": {"type": ["string", "null"]},
    },
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}}
_ANSWER = json.dumps(
    {
        "title": "Printer on fire",
        "priority": "high",
        "tags": ["hardware", "urgent"],
        "customer": {"id": 42, "name": "Acme"},
        "score": 0.93,
        "due": None,
    }
)


def _cpu_ms(fn: Callable[[], object], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1000


def _import_ms(module: str, repeat: int = 7) -> float:
    statement = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", statement], text=True)) for _ in range(repeat)]
    return statistics.median(runs) * 1000


def validator_costs(n: int = 20_000) -> dict[str, float]:
    """CPU ms per answer (json.loads + validate) and import ms, for promptdrop's validator and for jsonschema."""
    import jsonschema  # type: ignore[import-untyped]  # a dev dependency without stubs (the comparison only)
    from promptdrop.engine.structured import canonical, validate

    key = canonical(SCHEMA)
    validate(key, json.loads(_ANSWER))  # compiled once, before measuring
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    return {
        "json_loads_ms": _cpu_ms(lambda: json.loads(_ANSWER), n),
        "fastjsonschema_ms": _cpu_ms(lambda: validate(key, json.loads(_ANSWER)), n),
        "jsonschema_ms": _cpu_ms(lambda: next(validator.iter_errors(json.loads(_ANSWER)), None), n),
        "fastjsonschema_import_ms": _import_ms("fastjsonschema"),
        "jsonschema_import_ms": _import_ms("jsonschema"),
    }
