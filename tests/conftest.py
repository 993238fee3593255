"""Shared fixtures: a moto server for the session and a fresh local stack per test.

``moto_endpoint`` (session scope)
    Starts one :class:`~moto.server.ThreadedMotoServer` on a free 127.0.0.1 port and yields
    its endpoint URL (``"http://127.0.0.1:PORT"``); the server is stopped at session end.
    Point boto3/aioboto3 at it with ``endpoint_url=`` or with the variables of
    ``infra.local_aws.local_aws_env(moto_endpoint)``.

``local_aws`` (function scope)
    Yields an ``infra.local_aws.LocalAws``: the data resources of ``template.yaml``
    (input bucket with its S3 -> SQS notification and lifecycle rules, work queue + DLQ and
    its alarm, jobs table with TTL, secret) deployed in that server under a stack name unique
    to the test, so tests never see each other's objects, messages or items; plus a rule that
    routes ``source: promptdrop`` events on the function's bus to ``events_queue_url``. Its
    work queue starts with the ``s3:TestEvent`` message S3 sends when the notification is
    configured, as in AWS. The secret is empty.
    To run the handler against it, set the environment first, e.g.::

        for name, value in local_aws.function_env(OPENAI_API_KEY="sk-test").items():
            monkeypatch.setenv(name, value)

    and drive it with ``infra.event_source.SqsEventSource.for_stack(local_aws)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from infra.local_aws import LocalAws, deploy, start_moto, stop_moto


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a module that takes minutes, mostly waiting; run before the others")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-xdist hands the tests out in this order (make test): the slow ones first, so that none starts
    # last while the other workers sit idle. The sort is stable and the marker is set per module, so each
    # module's tests stay together, in their order.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto server shared by the whole test session."""
    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        stop_moto(server)


@pytest.fixture
def local_aws(moto_endpoint: str) -> LocalAws:
    """The template's data resources, freshly deployed in moto under a unique stack name."""
    return deploy(moto_endpoint, stack_name=f"pd-{uuid.uuid4().hex[:10]}")
