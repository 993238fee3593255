"""The package's shape, held: imports flow one way (no cycles, nothing upward), modules stay small, and
each class is one job (its methods one connected group).

handler → runtime → jobs → {engine, outputs, formats, adapters} → {records, messages, settings}:
the engine knows nothing of AWS, the adapters nothing of OpenAI (README, "How it flows").
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from promptdrop import GC_THRESHOLDS

PACKAGE = Path(__file__).parents[2] / "functions" / "promptdrop"
# What each part (or one named module of it) may import from the package, beyond itself.
BASE = {"records", "messages", "jsonsafe", "background", "settings", "routes"}
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    # engine: records only, for the error record and the failure codes it gives (plain data, no I/O).
    "engine": {"records"},
    "records": set(),
    "jsonsafe": set(),
    "background": set(),
    "settings": {"routes"},
    "routes": set(),  # the routing table: plain configuration
    "prices": set(),  # genai-prices, offline
    "messages": {"jsonsafe"},
    # engine.shared_limits: the plain records and protocol of the fleet's shared rate limits, which the
    # DynamoDB adapter implements — no OpenAI in it (the rest of the engine stays out of reach).
    "adapters": (BASE - {"settings"}) | {"engine.shared_limits"},
    "formats": {"engine", "records"},
    "outputs": {"records", "prices"},
    "events": {"messages"},
    "jobs": BASE | {"engine", "adapters", "formats", "outputs", "prices"},
    # X-Ray spans around the runtime's clients and the handler's runs: nothing of the package in it.
    "tracing": set(),
    # providers: one client per route and its credentials (engine clients, adapters' secrets and tokens).
    "providers": BASE | {"engine", "adapters", "prices"},
    "runtime": BASE | {"engine", "adapters", "jobs", "providers", "prices", "tracing"},
    # The handler's CloudWatch metrics: what a run reports (jobs' JobResult), as EMF.
    "run_metrics": {"jobs", "records"},
    "handler": BASE | {"runtime", "jobs", "events", "tracing", "run_metrics"},
    # The operator's commands: an entry point like the handler (``local`` runs the handler itself);
    # engine.request for the endpoints a line may name, engine.endpoints for what each bounds and
    # answers (``estimate``'s worst case, ``results``' answers: asked of their one home, not copied),
    # not the dispatch machinery.
    "cli": BASE
    | {"formats", "outputs", "prices", "adapters", "jobs", "runtime", "handler"}
    | {"engine.request", "engine.endpoints"},
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield ".".join(path.relative_to(PACKAGE).with_suffix("").parts), path


def part(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def imports_of(module: str, path: Path) -> set[str]:
    """The package modules ``module`` imports (absolute or relative), as dotted names."""
    found: set[str] = set()
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("promptdrop."):
                name = node.module.removeprefix("promptdrop.")
            else:
                continue
            found.add(name)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("promptdrop.") for a in node.names if a.name.startswith("promptdrop.")}
    return {name for name in found if name and name != "__init__"}


GRAPH = {module: imports_of(module, path) for module, path in modules()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_only_downward(module: str) -> None:
    own = part(module)
    assert own in ALLOWED, f"{module}: a new part of the package; say in ALLOWED what it may import"
    upward = {name for name in GRAPH[module] if part(name) != own and not {part(name), name} & ALLOWED[own]}
    assert not upward, f"{module} imports {sorted(upward)}, which {own} may not depend on"


def test_no_import_cycles_between_parts() -> None:
    edges = {(part(m), part(n)) for m, targets in GRAPH.items() for n in targets if part(m) != part(n)}
    reach = {a: {b for x, b in edges if x == a} for a, _ in edges}
    for start, direct in reach.items():
        seen, todo = set(), list(direct)
        while todo:
            node = todo.pop()
            assert node != start, f"an import cycle runs through {start}"
            if node not in seen:
                seen.add(node)
                todo += reach.get(node, set())


@pytest.mark.parametrize(("module", "path"), list(modules()))
def test_modules_stay_small(module: str, path: Path) -> None:
    assert path.read_text().count("\n") <= 350, f"{module} has grown past 350 lines: one job per module"


# A class holds together when its methods work on the same state: each method is linked to the ones it
# shares a ``self.`` attribute with or calls (LCOM4), and one connected group is one job a reader can
# name. Two groups are two classes sharing a name. Not counted: ``__init__``/``__post_init__`` (they
# touch every attribute, which would link everything), static and class methods, methods that touch no
# member at all; and records (dataclasses, pydantic models), whose methods are views of one item.
# The classes below are two groups on purpose, each for its reason.
TWO_GROUPS_ON_PURPOSE = {
    # One command's output: ``note`` speaks to the person on stderr, the rest writes the output on stdout.
    "cli.view.View",
    # ``user_agent`` overrides the SDK's property: its link is to the base class, not to these methods.
    "engine.client.LeanAsyncOpenAI",
    # A container's resources: ``aclose`` ends them all; the key refresh and a 401 go to its providers.
    "runtime.Runtime",
}
_NOT_LINKING = {"__init__", "__post_init__"}


def _is_record(node: ast.ClassDef) -> bool:
    def name(expr: ast.expr) -> str:
        expr = expr.func if isinstance(expr, ast.Call) else expr
        return expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else ""

    return "dataclass" in {name(d) for d in node.decorator_list} or "BaseModel" in {name(b) for b in node.bases}


def method_groups(node: ast.ClassDef) -> list[set[str]]:
    """The class's methods in connected groups: linked when they share a ``self.`` attribute or one uses the other."""
    uses: dict[str, set[str]] = {}
    for item in node.body:
        if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) or item.name in _NOT_LINKING:
            continue
        if {d.id for d in item.decorator_list if isinstance(d, ast.Name)} & {"staticmethod", "classmethod"}:
            continue
        used = {
            n.attr
            for n in ast.walk(item)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
        }
        if used:
            uses[item.name] = used | {item.name}
    groups: list[set[str]] = []
    for method, used in uses.items():
        linked = [g for g in groups if any(used & uses[m] for m in g)]
        merged = {method}.union(*linked)
        groups = [g for g in groups if g not in linked] + [merged]
    return groups


def classes() -> Iterator[tuple[str, ast.ClassDef]]:
    for module, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                yield f"{module}.{node.name}", node


@pytest.mark.parametrize(("name", "node"), list(classes()), ids=lambda value: value if isinstance(value, str) else "")
def test_a_class_is_one_connected_group_of_methods(name: str, node: ast.ClassDef) -> None:
    if _is_record(node) or name in TWO_GROUPS_ON_PURPOSE:
        return
    groups = method_groups(node)
    assert len(groups) <= 1, f"{name} is {len(groups)} classes in one: {[sorted(g) for g in groups]}"


def test_the_classes_with_two_groups_on_purpose_still_have_two() -> None:
    # Once one is made whole (or gone), it leaves the list, and the check holds it like every other.
    found = {name: node for name, node in classes()}
    whole = [name for name in TWO_GROUPS_ON_PURPOSE if name not in found or len(method_groups(found[name])) <= 1]
    assert not whole, f"{whole}: no longer two groups, take them off TWO_GROUPS_ON_PURPOSE"


def test_the_cohesion_check_links_methods_by_state_and_by_calls() -> None:
    source = """
class Split:
    def __init__(self):
        self.a, self.b = 1, 2
    def one(self):
        return self.a
    def two(self):
        return self.b
    def three(self):
        return self.one() + self.helper()
    @staticmethod
    def helper():
        return 0
"""
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert sorted(map(sorted, method_groups(node))) == [["one", "three"], ["two"]]
    node.body.append(ast.parse("def four(self):\n    return self.a + self.b").body[0])
    assert [sorted(g) for g in method_groups(node)] == [["four", "one", "three", "two"]]


def test_importing_the_package_sets_the_collectors_thresholds_before_the_sdks_load() -> None:
    # A fresh interpreter: the thresholds must be in force before botocore's models are built
    code = "import gc, sys; import promptdrop; assert 'botocore' not in sys.modules; print(gc.get_threshold())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(PACKAGE.parent)},
    )
    assert out.stdout.strip() == str(GC_THRESHOLDS)
    assert GC_THRESHOLDS[0] >= 10 * 700  # Python's default young threshold is 700
