"""``make package``: the Lambda bundle, built from wheels, without Docker or the SAM CLI.

``python -m infra.package`` writes ``dist/promptdrop-lambda-arm64.zip`` for the function in
``template.yaml`` (arm64, python3.12), and beside it ``promptdrop-lambda-arm64.template.yaml``: the
same template with ``CodeUri`` pointing at the zip, for ``aws cloudformation package`` (README,
"Deploy to AWS"). ``--platform host`` builds the same bundle for this machine's platform and
Python instead, so tests can run the handler from it.

1. pip installs ``functions/requirements.txt`` into a staging folder, wheels only
   (``--only-binary=:all:``): a source distribution would be built for this machine, not for Lambda.
2. Strips what the function never loads (:data:`STRIP_RULES`), then copies ``functions/promptdrop``.
3. Compiles bytecode for the target's Python, when such an interpreter is at hand.
4. Zips it deterministically (sorted entries, fixed timestamps and modes): the same inputs give
   the same bytes, so an unchanged bundle is an unchanged deployment.
5. Prints its zipped and unzipped sizes against Lambda's limits, and the biggest packages.

The bundle carries boto3/botocore although the Lambda runtime has its own: aioboto3 pins
aiobotocore, which pins botocore to a narrow range (``botocore>=1.40.46,<1.40.62`` for
aiobotocore 2.25.1) and patches its internals, so the runtime's botocore, of whatever version
AWS ships that month, could break it. ``/var/task`` (the zip) comes first on the function's
``sys.path``, so the pinned copy is the one imported.

What a bundle is built for (:class:`Target`) and pip installing its wheels: :mod:`infra.wheels`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path, PurePosixPath
from typing import Final

from infra.wheels import (
    ARM64,
    NoWheelError,
    PackageError,
    Target,
    cache_tag_of,
    find_python,
    host_target,
    install_wheels,
    run_tool,
)

__all__ = [
    "ARM64",
    "DIRECT_UPLOAD_LIMIT",
    "STRIP_RULES",
    "UNZIPPED_LIMIT",
    "Bundle",
    "NoWheelError",
    "PackageError",
    "Target",
    "build",
    "find_python",
    "host_target",
    "main",
    "strip",
    "template_for_zip",
    "write_zip",
]


REPO_ROOT: Final = Path(__file__).resolve().parent.parent
REQUIREMENTS: Final = REPO_ROOT / "functions" / "requirements.txt"
SOURCE: Final = REPO_ROOT / "functions" / "promptdrop"
TEMPLATE: Final = REPO_ROOT / "template.yaml"

# Lambda's quotas, in its own units (MB = 2**20 bytes): a zip uploaded directly through the API,
# and the unzipped function (layers included). A zip deployed through S3 has only the second.
DIRECT_UPLOAD_LIMIT: Final = 50 * 2**20
UNZIPPED_LIMIT: Final = 250 * 2**20
_MB: Final = 2**20

# The DOS epoch: the earliest time a zip entry can hold, so every build stamps the same one.
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
# Where Lambda unpacks the zip: compiled into the bytecode as each module's file name, instead of
# the staging folder's random name, so the bytecode (and the zip) is the same on every build.
_TASK_ROOT: Final = "/var/task"


def _is_dependency_test_suite(parts: tuple[str, ...]) -> bool:
    return len(parts) >= 2 and parts[1] in {"tests", "test"} and not parts[0].endswith(".dist-info")


# What the function never loads, by path inside the bundle (labels as `make package` prints them).
# dist-info folders stay, but for RECORD: importlib.metadata reads METADATA (httpx2 and httpcore2
# read their own version when imported) and entry_points.txt (pydantic's plugin loader); RECORD is
# the installer's file list, read only by importlib.metadata.files(), which nothing here calls.
STRIP_RULES: Final[tuple[tuple[str, Callable[[tuple[str, ...]], bool]], ...]] = (
    # bin/: console scripts, whose shebang names the build machine's Python; Lambda runs none.
    ("console scripts", lambda p: p[0] == "bin"),
    # __pycache__: bytecode some wheel shipped for its own Python; step 3 writes the target's.
    ("other bytecode", lambda p: "__pycache__" in p),
    ("test suites", _is_dependency_test_suite),
    # *.pyi: read by type checkers, never imported.
    ("type stubs", lambda p: p[-1].endswith(".pyi")),
    ("RECORD files", lambda p: len(p) == 2 and p[0].endswith(".dist-info") and p[1] == "RECORD"),
)


def strip(root: Path) -> dict[str, int]:
    """Delete every file under ``root`` that a rule of :data:`STRIP_RULES` matches; bytes freed by rule."""
    freed: Counter[str] = Counter()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        parts = path.relative_to(root).parts
        rule = next((name for name, matches in STRIP_RULES if matches(parts)), None)
        if rule is not None:
            freed[rule] += path.stat().st_size
            path.unlink()
    for directory in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return dict(freed)


def _compile(staging: Path, python: str) -> None:
    # --invalidation-mode unchecked-hash. /var/task is read-only: a .pyc the interpreter judges stale
    # is recompiled in memory at every cold start and never rewritten, so it must never look stale.
    # - timestamp (the default) compares the source mtime recorded in the .pyc with the .py's: the
    #   zip stamps every file 1980-01-01, so they would never match;
    # - checked-hash reads and hashes every .py at each import: much of what the .pyc saves;
    # - unchecked-hash loads the .pyc as it is. There is nothing to check: a deployed zip's sources
    #   never change without a new zip, which this build recompiles. With no timestamp in it, the
    #   bytecode is also the same on every build.
    argv = [python, "-I", "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash"]
    run_tool([*argv, "-d", _TASK_ROOT, str(staging)], f"compiling bytecode with {python}")


def write_zip(root: Path, out: Path) -> None:
    """Zip ``root``'s files into ``out``: entries sorted, stamped 1980-01-01, mode 644 (755 if executable).

    The same files give the same bytes. Lambda runs the code as a user that owns none of it, so
    every file is made world-readable (a 600 file would fail at import).
    """
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=_ZIP_EPOCH)
            info.create_system = 3  # Unix: unzip and Lambda honour the mode below
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    partial.replace(out)


_CODE_URI: Final = re.compile(r"^(?P<key>[ \t]+CodeUri:[ \t]*)functions/?[ \t]*$", re.MULTILINE)


def template_for_zip(template: str, zip_name: str) -> str:
    """``template.yaml`` with the function's ``CodeUri: functions/`` replaced by ``zip_name``.

    `sam build` needs the source folder there (it installs requirements.txt itself); `aws
    cloudformation package` uploads a zip named there as it is, relative to the template's folder.
    """
    derived, count = _CODE_URI.subn(lambda m: m["key"] + zip_name, template)
    if count != 1:
        raise PackageError(f"template.yaml has {count} 'CodeUri: functions/' lines; infra/package.py expects one")
    header = (
        "# Generated by `make package` (infra/package.py) from template.yaml: the same stack, the function's\n"
        f"# code taken from {zip_name} beside this file. Deploy it as README's 'Deploy to AWS' says.\n"
    )
    return header + derived


@dataclass(frozen=True)
class Bundle:
    """A built zip and what it holds."""

    path: Path
    target: Target
    zipped: int
    unzipped: int
    # unzipped bytes by top-level name (a package, a module, or a dist-info folder)
    by_top_level: dict[str, int]
    distributions: dict[str, str]
    compiled_with: str | None
    template: Path | None


def _measure(path: Path) -> tuple[int, dict[str, int]]:
    sizes: Counter[str] = Counter()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            top = PurePosixPath(info.filename).parts[0]
            sizes[top.split(".")[0] if top.endswith(".py") else top] += info.file_size
    return sum(sizes.values()), dict(sizes)


def build(
    target: Target,
    *,
    out: Path,
    python: str | None,
    requirements: Path = REQUIREMENTS,
    source: Path = SOURCE,
    template: Path | None = None,
    log: Callable[[str], None] = print,
) -> Bundle:
    """Build the bundle for ``target`` into ``out``; ``python`` (of the target's version, or None)
    evaluates dependency markers and compiles the bytecode. With ``template``, also write the
    template for the zip beside it."""
    clock = time.monotonic()

    def took() -> str:
        nonlocal clock
        elapsed, clock = time.monotonic() - clock, time.monotonic()
        return f"{elapsed:.0f} s"

    with tempfile.TemporaryDirectory(prefix="promptdrop-package-") as tmp:
        staging = Path(tmp) / "bundle"
        log(f"installing {requirements.name} for {target.description} (wheels only)...")
        install_wheels(requirements, staging, target, None if python == sys.executable else python)
        installed = {d.metadata["Name"]: d.version for d in distributions(path=[str(staging)])}
        log(f"  {len(installed)} distributions in {took()}")
        freed = strip(staging)
        log("stripped " + ", ".join(f"{rule} ({size / 1024:.0f} KB)" for rule, size in freed.items()))
        shutil.copytree(source, staging / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if python is not None:
            took()
            log(f"compiling bytecode with {python}...")
            _compile(staging, python)
            log(f"  compiled in {took()}")
        write_zip(staging, out)
        log(f"zipped in {took()}")
    written = None
    if template is not None:
        written = out.with_name(f"{out.stem}.template.yaml")
        written.write_text(template_for_zip(template.read_text(), out.name))
    unzipped, by_top = _measure(out)
    return Bundle(out, target, out.stat().st_size, unzipped, by_top, installed, python, written)


def report(bundle: Bundle) -> str:
    """What `make package` prints: the sizes against Lambda's limits and the biggest packages."""

    def share(size: int, limit: int) -> str:
        return f"{size / _MB:6.1f} MB  {size / limit:4.0%} of {limit // _MB} MB"

    biggest = sorted(((s, n) for n, s in bundle.by_top_level.items() if not n.endswith(".dist-info")), reverse=True)
    lines = [
        f"{_shown(bundle.path)}: {bundle.target.description}, {len(bundle.distributions)} distributions",
        f"  bytecode  {f'compiled by {bundle.compiled_with} (unchecked-hash)' if bundle.compiled_with else 'none'}",
        f"  zipped    {share(bundle.zipped, DIRECT_UPLOAD_LIMIT)} (direct upload; larger zips deploy through S3)",
        f"  unzipped  {share(bundle.unzipped, UNZIPPED_LIMIT)}",
        "  biggest   " + ", ".join(f"{name} {size / _MB:.1f} MB" for size, name in biggest[:6]),
    ]
    if bundle.template is not None:
        lines.append(f"  template  {_shown(bundle.template)} (CodeUri: {bundle.path.name})")
        lines.append(
            f"  deploy    aws cloudformation package --template-file {_shown(bundle.template)} --s3-bucket BUCKET "
            "--output-template-file packaged.yaml, then aws cloudformation deploy (README: Deploy to AWS)"
        )
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is under it (what a reader types next)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra.package", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--platform",
        choices=["arm64", "host"],
        default="arm64",
        help="arm64: Lambda's (manylinux aarch64, CPython 3.12); host: this machine and this Python, for tests",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="the zip to write (default: dist/promptdrop-lambda-PLATFORM.zip)"
    )
    p.add_argument(
        "--python",
        default=None,
        help="arm64 only: the Python 3.12 that evaluates dependency markers and compiles the bytecode "
        "(default: python3.12 on PATH, else pyenv's newest 3.12)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    target = ARM64 if args.platform == "arm64" else host_target()
    if args.python is not None and target is not ARM64:
        print("error: --python is for --platform arm64 (a host bundle is for the Python running this)", file=sys.stderr)
        return 2
    out: Path = args.out or REPO_ROOT / "dist" / f"promptdrop-lambda-{target.name}.zip"
    if target is not ARM64:
        python: str | None = sys.executable
    elif args.python is not None:
        python = args.python
        if cache_tag_of(python) != ARM64.cache_tag:
            print(f"error: --python {python} is not a CPython 3.12", file=sys.stderr)
            return 2
    else:
        python = find_python(ARM64.cache_tag)
        if python is None:
            print(
                "warning: no Python 3.12 found (python3.12 on PATH, pyenv, or --python): the bundle gets no "
                "bytecode, so each cold start compiles it (about 1.4 s more), and dependency markers are "
                f"evaluated for Python {sys.version_info[0]}.{sys.version_info[1]}",
                file=sys.stderr,
            )
    started = time.monotonic()
    try:
        bundle = build(target, out=out, python=python, template=TEMPLATE if target is ARM64 else None)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report(bundle))
    print(f"  built in  {time.monotonic() - started:.0f} s")
    if bundle.unzipped > UNZIPPED_LIMIT:
        print(f"error: {bundle.unzipped / _MB:.1f} MB unzipped is over Lambda's 250 MB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
