"""functions/requirements.txt (what `make package` and `sam build` bundle) says what pyproject.toml's
[project].dependencies says (what the tests run against): the same requirements, one per line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _canonical(text: str) -> str:
    """One spelling per meaning: name normalised, extras sorted, specifiers and marker as packaging writes them."""
    requirement = Requirement(text)
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{canonicalize_name(requirement.name)}{extras}{requirement.specifier}{marker}"


def _bundled() -> list[str]:
    lines = (ROOT / "functions" / "requirements.txt").read_text().splitlines()
    return [line.split(" #", 1)[0].strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_txt_matches_the_project_dependencies() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bundled = _bundled()
    assert sorted(map(_canonical, bundled)) == sorted(map(_canonical, declared))
    assert len({Requirement(r).name for r in bundled}) == len(bundled), "a package named twice"


def test_canonical_form_tells_different_requirements_apart() -> None:
    # The check above is only as good as this: same meaning, same string; any change, another string.
    assert _canonical("OpenAI[aiohttp] >=3.50, <4") == _canonical("openai[aiohttp]<4,>=3.50")
    assert _canonical("openai[aiohttp]>=3.50,<4") != _canonical("openai>=3.50,<4")
    assert _canonical("openai[aiohttp]>=3.50,<4") != _canonical("openai[aiohttp]>=3.51,<4")
    assert _canonical("pydantic>=2.13,<3") != _canonical('pydantic>=2.13,<3; python_version < "3.13"')


def test_requirements_txt_holds_requirements_only() -> None:
    # pip options (-r, --index-url, --hash...) would change what `make package` resolves unseen.
    for line in _bundled():
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            pytest.fail(f"functions/requirements.txt: {line!r} is not a requirement ({exc})")
