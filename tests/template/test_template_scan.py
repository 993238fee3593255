"""A security scanner made for CloudFormation (checkov) finds nothing in the deployed template
that is not suppressed in template.yaml with its reason, and every suppression hides a real
finding. The scan runs offline.

checkov lives in its own virtualenv (``make checkov`` builds ``.venv-checkov`` from
``infra/checkov-requirements.txt``): its pins (boto3, urllib3, packaging, networkx) conflict with
the project's, so it cannot share ``.venv``. ``CHECKOV_BIN`` may name another checkov executable.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.template.sam import TEMPLATE, raw_template, transform

pytestmark = pytest.mark.xdist_group("checkov")  # its module fixtures built once, on one worker (make test)

CHECKOV = Path(os.environ.get("CHECKOV_BIN") or TEMPLATE.parent / ".venv-checkov" / "bin" / "checkov")
SCANNED = "template.json"  # the transformed template, suppressions and all
UNSUPPRESSED = "unsuppressed.json"  # the same without its checkov suppressions


@dataclass(frozen=True)
class Scan:
    report: dict[str, Any] = field(repr=False)
    template: dict[str, Any] = field(repr=False)
    network_attempts: int

    def results(self, kind: str, file_name: str) -> set[tuple[str, str]]:
        """(resource, check id) of each ``kind`` result ("failed", "skipped", "passed") in one file."""
        return {
            (r["resource"], r["check_id"])
            for r in self.report["results"].get(f"{kind}_checks", [])
            if Path(r["file_path"]).name == file_name
        }


@contextmanager
def _connection_trap() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket posing as the HTTP(S) proxy: a connection queued on it is a network attempt."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(64)
        trap.setblocking(False)
        yield f"http://127.0.0.1:{trap.getsockname()[1]}", trap


def _pending(trap: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = trap.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def _without_suppressions(template: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(template)
    for resource in stripped["Resources"].values():
        resource.get("Metadata", {}).pop("checkov", None)
    return stripped


def _declared_skips(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(resource, check id) -> reason, as checkov names resources ("AWS::S3::Bucket.InputBucket")."""
    return {
        (f"{resource['Type']}.{logical_id}", skip["id"]): skip.get("comment", "")
        for logical_id, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    if not CHECKOV.is_file():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make checkov` (or set CHECKOV_BIN)")
    template = transform(raw_template())
    directory = tmp_path_factory.mktemp("checkov")
    (directory / SCANNED).write_text(json.dumps(template, indent=1))
    (directory / UNSUPPRESSED).write_text(json.dumps(_without_suppressions(template), indent=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_"))}
    with _connection_trap() as (proxy, trap):
        env |= {
            # No platform: no guideline download, no API key, no version check (each would go online).
            "BC_SKIP_MAPPING": "TRUE",
            "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE",
            # Anything that still tries lands in the trap, not on the internet: requests reads either
            # case, checkov's own urllib3 client only the lower case. (Without the two settings
            # above, this trap counts 4 connections.)
            **{name: proxy for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
            "NO_PROXY": "",
            "no_proxy": "",
        }
        command = [str(CHECKOV), "--directory", str(directory), "--framework", "cloudformation"]
        completed = subprocess.run(
            [*command, "--skip-download", "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        attempts = _pending(trap)
    # 1 = some check failed: expected, the unsuppressed copy has findings.
    assert completed.returncode in (0, 1), completed.stderr
    return Scan(report=json.loads(completed.stdout), template=template, network_attempts=attempts)


def test_the_scan_is_offline_and_reads_every_file(scan: Scan) -> None:
    assert scan.network_attempts == 0
    assert scan.report["check_type"] == "cloudformation"
    assert scan.report["summary"]["parsing_errors"] == 0
    for file_name in (SCANNED, UNSUPPRESSED):
        scanned = {resource for resource, _ in scan.results("passed", file_name)}
        assert {"AWS::IAM::Role.ProcessorRole", "AWS::S3::Bucket.InputBucket"} <= scanned, file_name


def test_no_finding_is_left_unsuppressed(scan: Scan) -> None:
    failed = scan.results("failed", SCANNED)
    assert not failed, (
        "checkov findings in template.yaml: fix them, or suppress each with its reason under the "
        "resource's Metadata: checkov: skip: [{id, comment}]\n" + "\n".join(f"  {r} {c}" for r, c in sorted(failed))
    )


def test_every_suppression_is_used_and_says_why(scan: Scan) -> None:
    declared = _declared_skips(scan.template)
    assert set(declared) == scan.results("skipped", SCANNED), "a suppression that hides nothing is stale"
    for (resource, check_id), reason in declared.items():
        assert len(reason.split()) >= 8, f"{resource} {check_id}: say why it is suppressed"


def test_each_suppression_hides_a_real_finding(scan: Scan) -> None:
    # The same template without its suppressions fails exactly the suppressed checks: a new
    # finding, or a dropped suppression, fails test_no_finding_is_left_unsuppressed.
    assert scan.results("failed", UNSUPPRESSED) == scan.results("skipped", SCANNED)
    assert scan.results("failed", UNSUPPRESSED)
