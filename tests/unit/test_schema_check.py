"""A structured-output schema is checked before it is compiled: shape, size, references, regular expressions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from promptdrop.engine.schema_check import MAX_SCHEMA_PROPERTIES, schema_problem
from promptdrop.engine.structured import SchemaError, canonical, check_schema, validate


def problem(schema: Any) -> str | None:
    return schema_problem(schema, json.dumps(schema))


def with_pattern(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(a+)+$",  # the issue's: 35 characters ran for hours
        r"(a*)*",
        r"(\w+\s?)*$",
        r"(a|aa)+$",
        r"(x+x+)+y",
        r"(.*a){12}",
        r"^([a-zA-Z0-9]+\s?)+$",
        r"(é+)+",
        r"^(A+a)+$",  # case folded: under (?i) A and a are one
        r"([\u4e01-\u4e05]+)+",  # past Latin-1 too
    ],
)
def test_a_pattern_that_can_backtrack_exponentially_is_refused(pattern: str) -> None:
    assert "repeats a part that can match the same text in many ways" in (problem(with_pattern(pattern)) or "")


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[\w.+-]+@([\w-]+\.)+[\w-]{2,}$",  # each repetition ends with a dot it cannot begin with
        r"^\d{4}-\d{2}-\d{2}$",
        r"^(cat|dog)+$",
        r"^[A-Z][a-z]+( [A-Z][a-z]+)*$",
        r"^[a-z]+(-[a-z]+)*$",
        r"^(\s*,\s*\w+)*$",
        r"^([^,]+,)*[^,]+$",
        r"^(\d+\.)*\d+$",
        r'^(?:[^"\\]|\\.)*$',  # alternatives that begin differently: one way through
    ],
)
def test_common_patterns_pass(pattern: str) -> None:
    assert problem(with_pattern(pattern)) is None


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (with_pattern("[a-"), "is not a valid regular expression: unterminated character set"),
        (with_pattern(r"(a)\1"), "uses a backreference"),
        (with_pattern("a" * 1_001), "is longer than 1,000 characters"),
        ({"type": "object", "patternProperties": {"^(a+)+$": {}}}, "pattern '^(a+)+$' repeats"),
        ({"type": "object", "properties": "name"}, "#/properties must be an object of schemas"),
        ({"type": "object", "properties": {"a": "string"}}, "#/properties/a must be a schema"),
        ({"anyOf": {"type": "string"}}, "#/anyOf must be an array of schemas"),
        ({"required": "a"}, "#/required must be an array of property names"),
        ({"type": "string", "pattern": 5}, "#/pattern must be a string"),
        ({"$ref": "#"}, "$ref '#' refers back to itself"),
        ({"allOf": [{"$ref": "#"}]}, "refers back to itself"),
        (
            {"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"not": {"$ref": "#/definitions/a"}}}},
            "refers back to itself",
        ),
        ({"$ref": "#/definitions/missing"}, "points to nothing in the schema"),
    ],
)
def test_a_schema_that_cannot_be_used_safely_is_named_why(schema: Any, fragment: str) -> None:
    assert fragment in (problem(schema) or "")


def test_recursion_through_the_answer_is_fine() -> None:
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    assert problem(tree) is None
    assert validate(canonical(tree), {"children": [{"children": []}]}) is None


def test_size_and_depth_are_bounded() -> None:
    wide = {"type": "object", "properties": {f"p{i}": {} for i in range(MAX_SCHEMA_PROPERTIES + 1)}}
    assert "more than 1,000 properties" in (problem(wide) or "")
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    assert "deeper than 32 levels" in (problem(deep) or "")
    huge = {"type": "object", "description": "x" * 100_001}
    assert "the limit is 100,000" in (problem(huge) or "")


def test_check_schema_raises_before_compiling() -> None:
    with pytest.raises(SchemaError, match="refers back to itself"):
        check_schema(canonical({"$ref": "#"}))
    with pytest.raises(SchemaError, match="nested quantifiers"):
        check_schema(canonical(with_pattern("^(a+)+$")))
