"""`make package` (infra/package.py): the Lambda bundle is lean, deterministic, within Lambda's limits,
and runs the handler on its own.

The first tests need nothing but pip on local files. The others build real bundles from PyPI's
wheels — the host-platform variant, run from its unzipped folder against the moto server and the
fake OpenAI API, and the arm64 one that `make package` ships — and are skipped, with the reason in
the summary, only when the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from infra import package
from infra.event_source import SqsEventSource
from infra.fake_openai import FakeOpenAIConfig, serve_in_thread
from infra.local_aws import LocalAws, deploy, load_template

# Minutes of waiting (tests/conftest.py hands it out first), and its two builds made once: on one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("package")]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("invoke_from_bundle.py")
BUILD_TIMEOUT_S = 900  # a cold pip download on a shared 2-core machine; a warm build takes about 30 s
EM_AARCH64 = 183  # ELF e_machine of 64-bit Arm


# -- without the network ----------------------------------------------------------------------------------


def test_zip_is_reproducible_sorted_stamped_and_world_readable(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "sub" / "b.py").write_text("B = 1\n")
    (tree / "pkg" / "a.py").write_text("A = 1\n")
    (tree / "pkg" / "a.py").chmod(0o600)  # as a strict umask leaves it: Lambda's user could not read it
    (tree / "tool").write_text("#!/bin/sh\n")
    (tree / "tool").chmod(0o700)

    package.write_zip(tree, tmp_path / "one.zip")
    (tree / "pkg" / "a.py").touch()  # a later mtime must not change the bytes
    package.write_zip(tree, tmp_path / "two.zip")

    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["pkg/a.py", "pkg/sub/b.py", "tool"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in infos}
    assert modes == {"pkg/a.py": 0o644, "pkg/sub/b.py": 0o644, "tool": 0o755}


def test_strip_drops_what_lambda_never_loads_and_keeps_the_metadata_imports_read(tmp_path: Path) -> None:
    kept = [
        "httpx2/__init__.py",
        "httpx2/testing.py",  # a runtime module whose name merely looks like tests
        "httpx2-2.16.2.dist-info/METADATA",  # importlib.metadata.version("httpx2") at import
        "httpx2-2.16.2.dist-info/entry_points.txt",
        "six.py",
    ]
    dropped = [
        "bin/httpx",
        "httpx2/__pycache__/__init__.cpython-311.pyc",
        "aioitertools/tests/test_asyncio.py",
        "pydantic_core/_pydantic_core.pyi",
        "httpx2-2.16.2.dist-info/RECORD",
    ]
    for name in kept + dropped:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x" * 10)

    freed = package.strip(tmp_path)

    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(kept)
    assert not (tmp_path / "bin").exists()
    assert not (tmp_path / "aioitertools").exists()  # emptied folders go too
    assert sum(freed.values()) == 10 * len(dropped)


def test_template_for_zip_changes_only_the_code_uri(tmp_path: Path) -> None:
    derived = tmp_path / "derived.yaml"
    derived.write_text(package.template_for_zip(package.TEMPLATE.read_text(), "bundle.zip"))

    original, changed = load_template(package.TEMPLATE), load_template(derived)
    function = changed["Resources"]["ProcessorFunction"]["Properties"]
    assert function["CodeUri"] == "bundle.zip"
    function["CodeUri"] = original["Resources"]["ProcessorFunction"]["Properties"]["CodeUri"]
    assert changed == original


def test_template_for_zip_refuses_a_template_it_does_not_recognise() -> None:
    with pytest.raises(package.PackageError, match="0 'CodeUri: functions/' lines"):
        package.template_for_zip("Resources: {}\n", "bundle.zip")


def _offline_requirements(tmp_path: Path, *files: str) -> Path:
    """A requirements file that makes pip look only at ``files`` (empty stand-ins, never installed)."""
    links = tmp_path / "links"
    links.mkdir()
    for name in files:
        (links / name).write_bytes(b"")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"--no-index\n--find-links {links}\nnowheel==1.0\n")
    return requirements


@pytest.mark.parametrize(
    ("target", "files"),
    [
        (package.host_target(), ["nowheel-1.0.tar.gz"]),
        # an x86_64 wheel is no use on arm64: refused like a source distribution
        (package.ARM64, ["nowheel-1.0.tar.gz", "nowheel-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"]),
    ],
    ids=["sdist-only", "x86_64-wheel-only"],
)
def test_a_requirement_without_a_usable_wheel_fails_naming_it(
    tmp_path: Path, target: package.Target, files: list[str]
) -> None:
    requirements = _offline_requirements(tmp_path, *files)
    with pytest.raises(package.NoWheelError) as caught:
        package.build(target, out=tmp_path / "bundle.zip", python=None, requirements=requirements, log=lambda _: None)
    assert caught.value.requirement == "nowheel==1.0"
    assert str(caught.value).startswith(f"nowheel==1.0: pip found no wheel for {target.description}")
    assert not (tmp_path / "bundle.zip").exists()


# -- real bundles, from the package index -----------------------------------------------------------------


def _index_unreachable() -> str | None:
    """Why pip's index cannot be reached, or None. PIP_INDEX_URL if set, else PyPI."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").split()[0].rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(url, timeout=15):
            return None
    except urllib.error.HTTPError as answered:
        answered.close()  # it answered (closed now, not by the garbage collector during another test)
        return None
    except OSError as exc:
        return f"{url}: {exc}"


@dataclass(frozen=True)
class Built:
    zip: Path
    stdout: str

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.zip) as archive:
            return archive.namelist()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """`python -m infra.package` for both platforms, at once: each spends most of its time waiting on
    downloads (the wheels of the two differ, so pip's cache could not serve one from the other)."""
    why = _index_unreachable()
    if why is not None:
        pytest.skip(f"the package index is unreachable ({why}): a bundle is built from its wheels")
    args = {"host": ["--platform", "host"], "arm64": []}
    outs = {name: tmp_path_factory.mktemp(name) / "bundle.zip" for name in args}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "infra.package", *extra, "--out", str(outs[name])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, extra in args.items()
    }
    built = {}
    for name, process in running.items():
        stdout, _ = process.communicate(timeout=BUILD_TIMEOUT_S)
        assert process.returncode == 0, stdout
        built[name] = Built(outs[name], stdout)
    return built


@pytest.fixture(scope="module")
def host_build(builds: dict[str, Built]) -> Built:
    return builds["host"]


@pytest.fixture(scope="module")
def arm64_build(builds: dict[str, Built]) -> Built:
    return builds["arm64"]


def _dev_only_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    dev = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    return dev - runtime


def _distributions(names: list[str]) -> dict[str, Version]:
    tops = {PurePosixPath(n).parts[0] for n in names}
    found = {}
    for top in tops:
        if top.endswith(".dist-info"):
            name, version = top.removesuffix(".dist-info").rsplit("-", 1)
            found[canonicalize_name(name)] = Version(version)
    return found


@pytest.mark.timeout(BUILD_TIMEOUT_S)
@pytest.mark.parametrize("build", ["host_build", "arm64_build"])
def test_bundle_holds_the_function_and_its_runtime_dependencies_only(
    build: str, request: pytest.FixtureRequest
) -> None:
    names = request.getfixturevalue(build).names()
    assert "promptdrop/handler.py" in names
    distributions = _distributions(names)
    for needed in ("openai", "aioboto3", "aws-lambda-powertools", "pydantic", "pydantic-settings"):
        assert needed in distributions
    assert not _dev_only_distributions() & set(distributions)  # moto, pytest, mypy, cfn-lint, ...
    tops = {PurePosixPath(n).parts[0] for n in names}
    assert not tops & {"tests", "infra", "functions", "bin", "moto", "pytest", "_pytest", "promptdrop.egg-info"}
    parts = [PurePosixPath(n).parts for n in names]
    assert not [p for p in parts if p[-1] == "RECORD" or p[-1].endswith(".pyi")]
    assert not [p for p in parts if len(p) > 2 and p[1] in {"tests", "test"}]


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_arm64_bundle_carries_the_botocore_aiobotocore_pins(arm64_build: Built) -> None:
    # The Lambda runtime's own boto3/botocore would not do: aiobotocore accepts a narrow range.
    with zipfile.ZipFile(arm64_build.zip) as archive:
        metadata_name = next(n for n in archive.namelist() if n.startswith("aiobotocore-") and n.endswith("/METADATA"))
        metadata = archive.read(metadata_name).decode()
    pins = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    (botocore_pin,) = [r for r in pins if r.name == "botocore"]
    bundled = _distributions(arm64_build.names())
    assert bundled["botocore"] in botocore_pin.specifier
    assert "boto3" in bundled


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_arm64_bundle_binaries_are_aarch64_for_cpython_312(arm64_build: Built) -> None:
    with zipfile.ZipFile(arm64_build.zip) as archive:
        binaries = {n: archive.read(n) for n in archive.namelist() if ".so" in PurePosixPath(n).suffixes}
    assert "pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so" in binaries
    assert {n: _elf_machine(data) for n, data in binaries.items()} == dict.fromkeys(binaries, EM_AARCH64)
    extensions = [n for n in binaries if n.endswith(".so") and ".cpython-" in n]
    assert all(n.endswith(".cpython-312-aarch64-linux-gnu.so") for n in extensions), extensions


def _pyc_headers(names: list[str], archive: zipfile.ZipFile, cache_tag: str) -> dict[str, bytes]:
    """The 8-byte header (magic, flags) of each .py's compiled file; a .py without one maps to b''."""
    headers = {}
    for name in names:
        if name.endswith(".py"):
            path = PurePosixPath(name)
            pyc = str(path.parent / "__pycache__" / f"{path.stem}.{cache_tag}.pyc")
            headers[name] = archive.read(pyc)[:8] if pyc in names else b""
    return headers


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_arm64_bundle_bytecode_is_for_312_and_never_needs_rewriting(arm64_build: Built) -> None:
    names = arm64_build.names()
    compiled_by = package.find_python("cpython-312")
    with zipfile.ZipFile(arm64_build.zip) as archive:
        headers = _pyc_headers(names, archive, "cpython-312")
    if compiled_by is None:  # no 3.12 here: the build said so and shipped no bytecode
        assert "bytecode  none" in arm64_build.stdout
        assert not [n for n in names if n.endswith(".pyc")]
        return
    assert f"compiled by {compiled_by} (unchecked-hash)" in arm64_build.stdout
    assert not [n for n, header in headers.items() if not header], "every module has its 3.12 bytecode"
    assert len({h[:4] for h in headers.values()}) == 1  # one magic number: one Python version
    # flags 0b01: hash-based, source never checked (PEP 552): valid on a read-only /var/task forever
    assert {int.from_bytes(h[4:8], "little") for h in headers.values()} == {0b01}
    assert not [n for n in names if n.endswith(".pyc") and ".cpython-312." not in n]


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_arm64_sizes_are_within_lambda_limits_and_reported_as_they_are(arm64_build: Built) -> None:
    with zipfile.ZipFile(arm64_build.zip) as archive:
        unzipped = sum(i.file_size for i in archive.infolist())
    zipped = arm64_build.zip.stat().st_size
    assert unzipped < package.UNZIPPED_LIMIT
    assert zipped < package.DIRECT_UPLOAD_LIMIT  # `aws lambda update-function-code --zip-file` still works
    mb = 2**20
    assert f"zipped    {zipped / mb:6.1f} MB" in arm64_build.stdout
    assert f"unzipped  {unzipped / mb:6.1f} MB" in arm64_build.stdout
    assert "biggest   " in arm64_build.stdout


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_arm64_build_writes_the_template_for_its_zip(arm64_build: Built) -> None:
    template = arm64_build.zip.with_name("bundle.template.yaml")
    function = load_template(template)["Resources"]["ProcessorFunction"]["Properties"]
    assert function["CodeUri"] == "bundle.zip"  # relative to the template: `aws cloudformation package` uploads it


# -- the host bundle, run on its own --------------------------------------------------------------------


@dataclass(frozen=True)
class BundleRun:
    bundle: Path
    results: list[dict[str, Any]]
    answer: str
    summary: dict[str, Any]
    unchanged: bool


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def bundle_run(host_build: Built, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BundleRun]:
    """Given the host bundle unzipped and a stack in moto, when a .txt file is dropped in the input
    bucket, then Lambda's SQS event source hands each message to the handler run from the bundle."""
    bundle = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(host_build.zip) as archive:
        archive.extractall(bundle)
    before = _snapshot(bundle)
    stack: LocalAws = deploy(moto_endpoint, stack_name=f"pd-{uuid.uuid4().hex[:10]}")
    key = "inputs/bundle check.txt"
    api_key = "sk-bundle-check"
    results: list[dict[str, Any]] = []

    def run_from_bundle(event: dict[str, Any], _context: object) -> Any:
        env = stack.function_env(OPENAI_BASE_URL=fake.base_url, POWERTOOLS_LOG_LEVEL="WARNING")
        ran = subprocess.run(
            [sys.executable, "-I", "-S", str(DRIVER), str(bundle)],
            input=json.dumps(event),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        results.append(json.loads(ran.stdout.strip().splitlines()[-1]))
        return results[-1]["response"]

    session = boto3.Session(region_name=stack.region, aws_access_key_id="testing", aws_secret_access_key="testing")
    s3 = session.client("s3", endpoint_url=stack.endpoint)
    secrets = session.client("secretsmanager", endpoint_url=stack.endpoint)
    with serve_in_thread(FakeOpenAIConfig(require_api_key=api_key)) as fake:
        secrets.put_secret_value(SecretId=stack.secret_arn, SecretString=api_key)
        s3.put_object(Bucket=stack.bucket, Key=key, Body=b"Is this bundle complete?")
        with SqsEventSource.for_stack(stack) as event_source:
            event_source.drain(run_from_bundle, wait_s=0)
    outputs = f"{stack.output_prefix}{key}"
    answer = s3.get_object(Bucket=stack.bucket, Key=f"{outputs}.out.txt")["Body"].read().decode()
    summary = json.loads(s3.get_object(Bucket=stack.bucket, Key=f"{outputs}.summary.json")["Body"].read())
    yield BundleRun(bundle, results, answer, summary, unchanged=_snapshot(bundle) == before)
    s3.close()
    secrets.close()


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_handler_run_from_the_bundle_answers_a_dropped_file(bundle_run: BundleRun) -> None:
    # the s3:TestEvent S3 sends when the notification is set up (acknowledged, skipped), then the upload
    assert [r["response"] for r in bundle_run.results] == [{"batchItemFailures": []}] * 2
    assert bundle_run.answer == "Echo: Is this bundle complete?"
    assert bundle_run.summary["status"] == "SUCCEEDED"


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_every_module_came_from_the_bundle_or_the_standard_library(bundle_run: BundleRun) -> None:
    (first, *_) = bundle_run.results
    assert first["no_site"] == 1
    bundle = str(bundle_run.bundle)
    for result in bundle_run.results:
        modules: dict[str, str] = result["modules"]
        for name in ("promptdrop", "promptdrop.handler", "openai", "aiobotocore", "botocore", "pydantic_core"):
            assert modules[name].startswith(bundle + os.sep), (name, modules[name])
        outside = {n: f for n, f in modules.items() if not f.startswith((bundle + os.sep, *result["stdlib"]))}
        assert set(outside.values()) == {str(DRIVER)}  # as __main__ (and __mp_main__, once multiprocessing loads)


@pytest.mark.timeout(BUILD_TIMEOUT_S)
def test_the_bundle_bytecode_was_used_as_it_is(bundle_run: BundleRun) -> None:
    # Nothing written while the handler ran: a missing or stale .pyc would have been (re)written
    # here, and on Lambda's read-only /var/task recompiled at every cold start instead.
    assert bundle_run.unchanged
