"""One error record, bounded; every code promptdrop gives itself a FailureCode member; keys masked.

The code scan reads the package's source: a failure raised with a string code that is not a member
(a typo, a new code nobody added to the enum and the README's table) fails here, not in front of users.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import httpx2
import openai
import pytest
from promptdrop.engine.errors import classify, redact
from promptdrop.records import (
    MAX_ERROR_CODE_CHARS,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_ERROR_TYPE_CHARS,
    ErrorRecord,
    FailureCode,
)

PACKAGE = Path(__file__).parents[2] / "functions" / "promptdrop"
README = Path(__file__).parents[2] / "README.md"

# Where a call takes a failure code: (the called name, the code's position among the arguments).
CODE_ARGUMENT = {
    "FileRejected": 0,
    "UnusableAnswer": 0,
    "Ending": 0,
    "ErrorRecord": 1,
    "LineError": None,  # by keyword only
    "not_sent": 1,
    "report": 2,
}


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def codes_given_in_source() -> list[tuple[str, int, ast.expr]]:
    """(file, line, the code expression) for every call above that names a code."""
    found: list[tuple[str, int, ast.expr]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or (name := _called_name(node)) not in CODE_ARGUMENT:
                continue
            at = CODE_ARGUMENT[name]
            given = [k.value for k in node.keywords if k.arg == "code"]
            if at is not None and len(node.args) > at:
                given.append(node.args[at])
            found += [(str(path.relative_to(PACKAGE)), node.lineno, expr) for expr in given]
    return found


def test_every_code_raised_in_the_package_is_a_failure_code_member() -> None:
    members = {code.value for code in FailureCode}
    given = codes_given_in_source()
    assert len(given) > 30  # the scan finds the raises (it would pass vacuously otherwise)
    strange = [
        f"{file}:{line}: {ast.unparse(expr)}"
        for file, line, expr in given
        if (isinstance(expr, ast.Constant) and expr.value not in members)
        or (
            isinstance(expr, ast.Attribute)
            and isinstance(expr.value, ast.Name)
            and expr.value.id == "FailureCode"
            and expr.attr not in FailureCode.__members__
        )
    ]
    assert strange == []


def test_the_readme_lists_every_failure_code() -> None:
    text = README.read_text()
    missing = [code.value for code in FailureCode if f"`{code.value}`" not in text]
    assert missing == []


def test_an_error_record_bounds_every_field_whatever_it_is_given() -> None:
    # Given an API error body with a 250 KB code, a long type and a 1 MB message
    record = ErrorRecord("t" * 5_000, "c" * 250_000, "m" * 1_000_000, 400)

    # Then what is stored and sent stays small
    assert len(record.code) == MAX_ERROR_CODE_CHARS
    assert record.code.endswith("…")
    assert len(record.type) == MAX_ERROR_TYPE_CHARS
    assert len(record.message) == MAX_ERROR_MESSAGE_CHARS
    assert len(json.dumps(record.as_dict()).encode()) < 10_000
    assert record.status_code == 400


@pytest.mark.parametrize("status", [True, "400", 10**400, -1, 4.5])
def test_a_status_that_is_not_an_http_status_is_not_kept(status: object) -> None:
    assert ErrorRecord("t", "c", "m", status).status_code is None  # type: ignore[arg-type]


def test_a_failure_code_is_stored_as_its_plain_value() -> None:
    record = ErrorRecord("file_error", FailureCode.TOO_LARGE, "big")
    assert record.as_dict() == {"type": "file_error", "code": "too_large", "status_code": None, "message": "big"}
    assert type(record.code) is str


def test_an_error_read_back_is_bounded_again() -> None:
    old = {"type": "x", "code": "c" * 1_000, "message": None, "status_code": "500", "extra": 1}
    assert ErrorRecord.from_dict(old).as_dict() == {
        "type": "x",
        "code": "c" * (MAX_ERROR_CODE_CHARS - 1) + "…",
        "status_code": None,
        "message": "",
    }
    assert ErrorRecord.from_dict("not a dict") == ErrorRecord("", "", "")


def _api_error(status: int, body: dict[str, object]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "https://api.example/v1/chat/completions")
    response = httpx2.Response(status, json=body, request=request)
    return openai.APIStatusError(str(body), response=response, body=body.get("error", body))


def test_an_api_error_with_a_huge_code_is_classified_bounded() -> None:
    info = classify(_api_error(400, {"error": {"code": "x" * 250_000, "type": "y" * 300, "message": "z" * 10**6}}))
    assert len(info.code) == MAX_ERROR_CODE_CHARS
    assert len(info.type) == MAX_ERROR_TYPE_CHARS
    assert len(info.message) <= MAX_ERROR_MESSAGE_CHARS
    assert info.error.as_dict()["status_code"] == 400


KEY = "proj-canary-9f8e7d6c5b4a39281706"  # a key that does not look like sk-…


def test_the_configured_key_is_masked_whatever_its_shape() -> None:
    # Given a 401 echoing the key whole, and in OpenAI's partial form (first characters, stars, last ones)
    partial = f"{KEY[:8]}{'*' * 20}{KEY[-4:]}"
    message = f"Incorrect API key provided: {KEY}; also {partial}."
    error = _api_error(401, {"error": {"code": "invalid_api_key", "type": "invalid_request_error", "message": message}})

    # When it is classified with the key the run sent
    info = classify(error, secrets=(KEY,))

    # Then neither form is in the message or the body kept
    kept = info.message + json.dumps(info.body)
    assert "Incorrect API key provided" in kept
    for part in (KEY, KEY[:8], KEY[-4:], partial):
        assert part not in kept


def test_without_the_key_only_key_shapes_are_masked() -> None:
    assert KEY in redact(f"echo {KEY}")  # the gap the configured key closes
    assert redact(f"echo {KEY}", (KEY,)) == "echo [redacted]"
    assert redact("Bearer sk-abcdef123456", ()) == "Bearer [redacted]"
    assert redact("short key", ("short",)) == "short key"  # too short to mask by value: it would mask words
