"""What a bundle is built for (:class:`Target`: Lambda's arm64 or this machine), the interpreter that
compiles its bytecode, and pip installing the requirements' wheels for it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ARM64",
    "NoWheelError",
    "PackageError",
    "Target",
    "cache_tag_of",
    "find_python",
    "host_target",
    "install_wheels",
    "run_tool",
]


class PackageError(Exception):
    """The bundle cannot be built; the message says why and what to do."""


class NoWheelError(PackageError):
    """A requirement has no wheel for the target platform and no pure-Python wheel."""

    def __init__(self, requirement: str, target: Target, pip_output: str) -> None:
        self.requirement = requirement
        super().__init__(
            f"{requirement}: pip found no wheel for {target.description} and no pure-Python wheel. Source "
            "distributions are refused: pip would build them for this machine, not for Lambda. Pin a version "
            "that ships such a wheel, or replace the package.\n"
            f"pip said:\n{_tail(pip_output)}"
        )


@dataclass(frozen=True)
class Target:
    """The platform and Python a bundle is built for."""

    name: str
    description: str
    # Names the bytecode files this Python loads (``__pycache__/m.cpython-312.pyc``).
    cache_tag: str
    pip_args: tuple[str, ...]


# Lambda's python3.12 runs on Amazon Linux 2023, whose glibc is 2.34: every manylinux wheel up to
# manylinux_2_34 loads there (as `sam build` allows), not only manylinux2014 (glibc 2.17). pip
# takes these tags literally, so each is named, the newest first (pip prefers earlier ones).
_ARM64_PLATFORMS: Final = (*(f"manylinux_2_{minor}_aarch64" for minor in range(34, 16, -1)), "manylinux2014_aarch64")

ARM64: Final = Target(
    name="arm64",
    description="manylinux aarch64, CPython 3.12",
    cache_tag="cpython-312",
    pip_args=(
        *(arg for platform in _ARM64_PLATFORMS for arg in ("--platform", platform)),
        "--implementation",
        "cp",
        "--python-version",
        "3.12",
    ),
)


def host_target() -> Target:
    """This machine's platform and the Python running this module (what the tests run)."""
    version = ".".join(map(str, sys.version_info[:2]))
    return Target(
        name="host",
        description=f"this machine ({sys.platform}, {sys.implementation.name} {version})",
        cache_tag=sys.implementation.cache_tag or "",
        pip_args=(),
    )


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))


def _candidates(version: str) -> Iterator[str]:
    on_path = shutil.which(f"python{version}")
    if on_path:
        yield on_path
    roots = {os.environ.get("PYENV_ROOT") or "", str(Path.home() / ".pyenv")} - {""}
    for root in sorted(roots):
        found = Path(root).glob(f"versions/{version}.*/bin/python{version}")
        yield from sorted((str(p) for p in found), key=_version_key, reverse=True)


def cache_tag_of(python: str) -> str | None:
    try:
        ran = subprocess.run(
            [python, "-I", "-c", "import sys; print(sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ran.stdout.strip() if ran.returncode == 0 else None


def find_python(cache_tag: str) -> str | None:
    """An interpreter whose bytecode is ``cache_tag`` (e.g. ``cpython-312``): ``python3.12`` on PATH,
    else the newest pyenv 3.12. Each is run to check it: a pyenv shim is on PATH even when the
    selected version lacks the command."""
    match = re.fullmatch(r"cpython-(\d)(\d+)", cache_tag)
    if match is None:
        return None
    version = f"{match[1]}.{match[2]}"
    return next((c for c in _candidates(version) if cache_tag_of(c) == cache_tag), None)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_tool(argv: Sequence[str], what: str) -> str:
    ran = subprocess.run(argv, capture_output=True, text=True, check=False)
    output = ran.stdout + ran.stderr
    if ran.returncode != 0:
        raise PackageError(f"{what} failed (exit status {ran.returncode}):\n{_tail(output)}")
    return output


def install_wheels(requirements: Path, staging: Path, target: Target, python: str | None) -> None:
    # pip evaluates dependency markers (python_version < "3.13", ...) for the Python that runs it,
    # whatever --python-version says: with --python it runs under the target's interpreter.
    argv = [sys.executable, "-m", "pip", *(["--python", python] if python else [])]
    argv += ["install", "--target", str(staging), "--requirement", str(requirements), "--only-binary=:all:"]
    # --no-compile: pip would write bytecode for its own Python; the build compiles the target's (infra.package).
    # --no-warn-conflicts: pip would check the packages of the environment running it, not the bundle's.
    argv += ["--no-compile", "--no-warn-conflicts", "--disable-pip-version-check", "--no-input", *target.pip_args]
    try:
        run_tool(argv, "pip install")
    except PackageError as exc:
        # pip reports a requirement it has no acceptable file for only in its output.
        missing = re.search(r"No matching distribution found for (\S+)", str(exc))
        if missing:
            raise NoWheelError(missing[1], target, str(exc)) from None
        raise
