"""A structured-output schema from a user's request, checked before it is compiled or any request is sent.

``fastjsonschema`` compiles a schema to Python code and trusts it. Each check here stops one way a
schema would break a run instead of failing its own line (README, "Limits"):

- **shape**: a keyword holding the wrong kind of value (``"properties": "name"``) would raise
  ``AttributeError`` while compiling; an invalid ``pattern``, ``re.error``.
- **size**: compiling costs about 42 MB of peak memory per 1,000 properties (measured: 15,500
  properties took 1.2 GB, past the function's 1,024 MB), so a schema is held to
  :data:`MAX_SCHEMA_PROPERTIES` properties, :data:`MAX_SCHEMA_CHARS` characters and
  :data:`MAX_SCHEMA_DEPTH` levels of subschemas.
- **references**: a ``$ref`` cycle that no data is consumed along (``{"$ref": "#"}``; two
  definitions referring to each other) recurses until ``RecursionError`` on the first answer.
  Recursion through ``properties`` or ``items`` (a tree) is fine: each step goes one level into the answer.
- **regular expressions**: Python's ``re`` backtracks; ``^(a+)+$`` against 35 characters runs for
  hours, and a running match cannot be interrupted. A ``pattern`` (or a ``patternProperties`` key)
  whose repetition can split the same text many ways is refused (see :func:`_regex_problem`): a
  heuristic on the pattern's parse tree, written here because a backtracking-free engine (RE2) is a
  compiled dependency the Lambda bundle does not otherwise need. It refuses a few safe patterns
  (``(\\w|-)+`` → write ``[\\w-]+``) rather than let one hang an invocation.
"""

from __future__ import annotations

import importlib
import re
from collections import deque
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_PATTERN_CHARS", "MAX_SCHEMA_CHARS", "MAX_SCHEMA_DEPTH", "MAX_SCHEMA_PROPERTIES", "schema_problem"]

MAX_SCHEMA_CHARS = 100_000
MAX_SCHEMA_PROPERTIES = 1_000  # OpenAI takes 5,000; each costs ~42 KB of peak memory to compile here
MAX_SCHEMA_DEPTH = 32  # levels of subschemas; OpenAI's strict mode takes 10 levels of objects
MAX_PATTERN_CHARS = 1_000
_MANY = 10  # a repetition at least this many times can backtrack as badly as an unbounded one

# Python's own regex parser (``re._parser``: private, but what ``re.compile`` itself runs since 3.11).
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")
# Sets of characters as this check sees them: Latin-1 by code point, and every character past U+00FF
# as one of four kinds (a digit, another word character, a space, anything else): \d, \w and \s apart.
_DIGIT, _WORD, _SPACE, _REST = -1, -2, -3, -4
_OTHER = frozenset({_DIGIT, _WORD, _SPACE, _REST})  # an explicit character past U+00FF: any of them
_ALL = frozenset(range(256)) | _OTHER
_CLASSES = {
    "DIGIT": (r"\d", {_DIGIT}),
    "NOT_DIGIT": (r"\D", {_WORD, _SPACE, _REST}),
    "SPACE": (r"\s", {_SPACE}),
    "NOT_SPACE": (r"\S", {_DIGIT, _WORD, _REST}),
    "WORD": (r"\w", {_DIGIT, _WORD}),
    "NOT_WORD": (r"\W", {_SPACE, _REST}),
}
_CATEGORIES = {
    getattr(_c, f"CATEGORY_{name}"): frozenset(i for i in range(256) if re.match(rx, chr(i))) | beyond
    for name, (rx, beyond) in _CLASSES.items()
}

# Keywords whose value is a schema, an object of schemas, or a list of schemas.
_ONE = (
    *("additionalItems", "additionalProperties", "contains", "propertyNames", "not", "if", "then", "else"),
    *("unevaluatedItems", "unevaluatedProperties"),
)
_MAP = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")


def schema_problem(schema: Any, text: str) -> str | None:
    """Why the schema cannot be used safely (a message for the user), or None. ``text``: its JSON."""
    if len(text) > MAX_SCHEMA_CHARS:
        return f"the JSON schema is {len(text):,} characters; the limit is {MAX_SCHEMA_CHARS:,}"
    properties = 0
    for node, where, depth in _subschemas(schema, "#", 0):
        if depth > MAX_SCHEMA_DEPTH:
            return f"the JSON schema nests subschemas deeper than {MAX_SCHEMA_DEPTH} levels (at {where})"
        if (problem := _shape_problem(node, where)) is not None:
            return problem
        properties += len(node.get("properties", ())) if isinstance(node, dict) else 0
        if properties > MAX_SCHEMA_PROPERTIES:
            return f"the JSON schema has more than {MAX_SCHEMA_PROPERTIES:,} properties (the limit)"
        for pattern in _patterns(node):
            if (problem := _regex_problem(pattern)) is not None:
                return f"{where}: pattern {pattern[:80]!r} {problem}"
    return _ref_cycle(schema)


def _subschemas(node: Any, where: str, depth: int) -> Iterator[tuple[Any, str, int]]:
    """Every subschema with its JSON pointer and level, breadth first (no recursion: any depth is safe)."""
    queue = deque([(node, where, depth)])
    while queue:
        node, where, depth = queue.popleft()
        yield node, where, depth
        if not isinstance(node, dict) or depth > MAX_SCHEMA_DEPTH:
            continue
        children: list[tuple[Any, str]] = [(node[k], f"{where}/{k}") for k in _ONE if k in node]
        items = node.get("items")
        if isinstance(items, list):
            children += [(s, f"{where}/items/{i}") for i, s in enumerate(items)]
        elif items is not None:
            children.append((items, f"{where}/items"))
        for key in _MAP:
            if isinstance(node.get(key), dict):
                children += [(s, f"{where}/{key}/{name}") for name, s in node[key].items()]
        for key in _LIST:
            if isinstance(node.get(key), list):
                children += [(s, f"{where}/{key}/{i}") for i, s in enumerate(node[key])]
        queue += [(child, at, depth + 1) for child, at in children]


def _shape_problem(node: Any, where: str) -> str | None:
    if not isinstance(node, dict | bool):
        return f"{where} must be a schema (an object or a boolean), not {type(node).__name__}"
    if isinstance(node, bool):
        return None
    wrong = next((k for k in _MAP if k in node and not isinstance(node[k], dict)), None)
    wrong = wrong or next((k for k in _LIST if k in node and not isinstance(node[k], list)), None)
    if wrong is not None:
        return f"{where}/{wrong} must be {'an object' if wrong in _MAP else 'an array'} of schemas"
    if "required" in node and not (
        isinstance(node["required"], list) and all(isinstance(r, str) for r in node["required"])
    ):
        return f"{where}/required must be an array of property names"
    if "$ref" in node and not isinstance(node["$ref"], str):
        return f"{where}/$ref must be a string"
    if "pattern" in node and not isinstance(node["pattern"], str):
        return f"{where}/pattern must be a string (a regular expression)"
    return None


def _patterns(node: Any) -> Iterator[str]:
    if not isinstance(node, dict):
        return
    if "pattern" in node:
        yield node["pattern"]
    yield from node.get("patternProperties") or ()


def _regex_problem(pattern: str) -> str | None:
    """Why a pattern is refused: invalid, too long, a backreference, or a repetition that can match the
    same text many ways (exponential backtracking) — a repeated part of variable length that can end
    with a character it can begin with (``(a+)+``, ``(\\w+\\s?)*``), or alternatives that can begin alike
    (``(a|ab)*``). ``([\\w-]+\\.)+`` passes: each repetition ends with a dot, which it cannot begin with."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"is longer than {MAX_PATTERN_CHARS:,} characters"
    try:
        parsed = _parser.parse(pattern)
    except (re.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
        return f"is not a valid regular expression: {exc}"
    try:
        return _risky(list(parsed))
    except RecursionError:  # hundreds of nested groups: no schema needs them
        return "nests its groups too deep"


def _risky(items: list[Any]) -> str | None:
    for op, av in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            _, high, body = av
            body_items = list(body)
            if high >= _MANY or high == _c.MAXREPEAT:
                lo, hi = body.getwidth()
                ends, begins = _edge(body_items, last=True), _edge(body_items, last=False)
                if lo != hi and _overlap(ends, begins) and not _exclusive_choice(body_items):
                    return "repeats a part that can match the same text in many ways (nested quantifiers)"
                if _ambiguous_branch(body_items):
                    return "repeats alternatives that can begin alike"
            problem = _risky(body_items)
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            return "uses a backreference"
        else:
            problem = next((p for sub in _nested(op, av) if (p := _risky(sub)) is not None), None)
        if problem is not None:
            return problem
    return None


def _nested(op: Any, av: Any) -> list[list[Any]]:
    """The sub-sequences of one parsed item (a group's, an alternation's, a look-around's)."""
    if op == _c.SUBPATTERN:
        return [list(av[3])]
    if op == _c.BRANCH:
        return [list(alt) for alt in av[1]]
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [list(av[1])]
    if op == _c.ATOMIC_GROUP:
        return [list(av)]
    if op == _c.POSSESSIVE_REPEAT:
        return [list(av[2])]
    return []


def _exclusive_choice(items: list[Any]) -> bool:
    """Alternatives of fixed lengths that begin differently (``(?:[^"\\]|\\.)``): one way to match each step."""
    while len(items) == 1 and items[0][0] == _c.SUBPATTERN:
        items = list(items[0][1][3])
    if len(items) != 1 or items[0][0] != _c.BRANCH:
        return False
    alts = items[0][1][1]
    firsts = [_edge(list(alt), last=False) for alt in alts]
    fixed = all(alt.getwidth()[0] == alt.getwidth()[1] for alt in alts)
    return fixed and not any(_overlap(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :])


def _ambiguous_branch(items: list[Any]) -> bool:
    for op, av in items:
        if op == _c.BRANCH:
            firsts = [_edge(list(alt), last=False) for alt in av[1]]
            if any(_overlap(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :]):
                return True
            if sum(_nullable(list(alt)) for alt in av[1]) > 1:
                return True
        if any(_ambiguous_branch(sub) for sub in _nested(op, av) if op != _c.POSSESSIVE_REPEAT):
            return True
    return False


def _edge(items: list[Any], *, last: bool) -> set[int]:
    """The characters a match of ``items`` can begin (or end) with."""
    found: set[int] = set()
    for op, av in reversed(items) if last else items:
        found |= _item_edge(op, av, last)
        if not _nullable([(op, av)]):
            break
    return found


def _item_edge(op: Any, av: Any, last: bool) -> set[int]:
    if op == _c.LITERAL:
        return set(_char(av))
    if op == _c.NOT_LITERAL:
        return set(_ALL - _char(av)) | _OTHER
    if op == _c.IN:
        return _char_class(av)
    if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
        return set()
    subs = _nested(op, av) or ([list(av[2])] if op in (_c.MAX_REPEAT, _c.MIN_REPEAT) else [])
    if subs:
        return set().union(*(_edge(sub, last=last) for sub in subs))
    return set(_ALL)  # any character (., a negated literal), or one this check cannot tell


def _char_class(items: Any) -> set[int]:
    chars: set[int] = set()
    for op, av in items:
        if op == _c.LITERAL:
            chars |= _char(av)
        elif op == _c.RANGE:
            chars |= {c for c in range(av[0], min(av[1], 255) + 1)} | (_OTHER if av[1] > 255 else set())
        elif op == _c.CATEGORY:
            chars |= _CATEGORIES.get(av, _ALL)
        elif op != _c.NEGATE:
            chars |= _ALL
    return set(_ALL - chars) | _OTHER if items and items[0][0] == _c.NEGATE else chars


def _char(code: int) -> frozenset[int]:
    """One character as compared here: both cases, as under (?i) (elsewhere: a little more caution)."""
    if code > 255:
        return _OTHER
    return frozenset(ord(c) for c in {chr(code), chr(code).lower(), chr(code).upper()} if len(c) == 1 and ord(c) < 256)


def _nullable(items: list[Any]) -> bool:
    for op, av in items:
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            if av[0] == 0 or _nullable(list(av[2])):
                continue
            return False
        if op == _c.BRANCH:
            if any(_nullable(list(alt)) for alt in av[1]):
                continue
            return False
        if op in (_c.SUBPATTERN, _c.ATOMIC_GROUP) and _nullable(_nested(op, av)[0]):
            continue
        return False
    return True


def _overlap(a: set[int], b: set[int]) -> bool:
    return bool(a & b)


def _ref_cycle(schema: Any) -> str | None:
    """A ``$ref`` cycle along which no data is consumed, named; or None."""
    edges: dict[str, list[str]] = {}
    pending = ["#", *(node["$ref"] for node, _, _ in _subschemas(schema, "#", 0) if _has_ref(node))]
    while pending:
        ref = pending.pop()
        if ref in edges:
            continue
        target = _resolve(schema, ref)
        if target is _MISSING:
            return f"$ref {ref[:80]!r} points to nothing in the schema"
        edges[ref] = _same_level_refs(target)
        pending += edges[ref]
    for start, refs in edges.items():  # a walk along same-level references that comes back to where it began
        seen, stack = set(), list(refs)
        while stack:
            ref = stack.pop()
            if ref == start:
                return f"$ref {start[:80]!r} refers back to itself without going into the answer: it can never end"
            if ref not in seen:
                seen.add(ref)
                stack += edges.get(ref, [])
    return None


_MISSING = object()


def _has_ref(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("$ref"), str)


def _resolve(schema: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return None  # a remote reference: refused when compiled (structured._NoRemoteRefs)
    node = schema
    for step in [p for p in ref[1:].split("/") if p]:
        part = step.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _same_level_refs(node: Any) -> list[str]:
    """The references a schema applies to the same value it is given (no step into the answer)."""
    found: list[str] = []
    stack = [node]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if _has_ref(node):
            found.append(node["$ref"])
        stack += [node[k] for k in ("not", "if", "then", "else") if k in node]
        stack += [s for k in ("allOf", "anyOf", "oneOf") if isinstance(node.get(k), list) for s in node[k]]
    return found
