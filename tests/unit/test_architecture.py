"""The package's shape, held: imports flow one way (no cycles, nothing upward), modules stay small.

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
BASE = {"records", "messages", "jsonsafe", "background", "settings"}
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    # engine: records only, for the error record and the failure codes it gives (plain data, no I/O).
    "engine": {"records"},
    "records": set(),
    "jsonsafe": set(),
    "background": set(),
    "settings": set(),
    "prices": set(),  # genai-prices, offline
    "messages": {"jsonsafe"},
    # engine.shared_limits: the plain records and protocol of the fleet's shared rate limits, which the
    # DynamoDB adapter implements — no OpenAI in it (the rest of the engine stays out of reach).
    "adapters": (BASE - {"settings"}) | {"engine.shared_limits"},
    "formats": {"engine", "records"},
    "outputs": {"records", "prices"},
    "events": {"messages"},
    "jobs": BASE | {"engine", "adapters", "formats", "outputs", "prices"},
    "runtime": BASE | {"engine", "adapters", "jobs"},
    "handler": BASE | {"runtime", "jobs", "events"},
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
def test_modules_and_classes_stay_small(module: str, path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= 350, f"{module} has grown past 350 lines: one job per module"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= 200, f"{module}.{node.name} is {size} lines: split its responsibilities"


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
