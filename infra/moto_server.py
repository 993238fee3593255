"""The moto server the local stack lives in (moto's in-process ``mock_aws`` does not work with aioboto3),
the environment that points the SDKs at it, and boto3 clients on it.

Its WSGI middleware counts AWS calls (``GET /_local/calls``) and serializes DynamoDB; :mod:`infra.moto_patches`
makes moto's DynamoDB keep up at a million items.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Final

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from infra.moto_patches import fix_moto_at_scale

__all__ = ["REGION", "clients", "local_aws_env", "local_client", "start_moto", "stop_moto"]

REGION: Final = "us-east-1"

_DUMMY_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class _LocalMiddleware:
    """WSGI middleware of the local moto server: counts AWS calls, serializes DynamoDB.

    ``GET /_local/calls`` answers the calls counted so far by service and operation (the
    benchmark's "AWS calls per 1,000 prompts"); ``POST /_local/calls`` resets the count.

    One DynamoDB request at a time:
    moto's DynamoDB backend is not thread-safe: under concurrent requests (parallel shards in the
    tests) a transaction can fail half-way with "dictionary changed size during iteration" and
    moto's rollback then restores a table snapshot that drops other requests' writes. Real
    DynamoDB is linearizable per item; serializing its requests makes moto behave so. Other
    services (SQS long polls above all) stay concurrent.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/_local/calls":
            if environ.get("REQUEST_METHOD") == "POST":
                self._calls.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(dict(self._calls)).encode()]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        self._calls[target.replace("_20120810", "") or _s3_operation(environ)] += 1
        if target.startswith("DynamoDB"):
            with self._lock:
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


def _s3_operation(environ: dict[str, Any]) -> str:
    method = environ.get("REQUEST_METHOD", "")
    query = environ.get("QUERY_STRING", "")
    if "uploadId" in query or "uploads" in query:
        return f"S3.Multipart{method}"
    return f"S3.{method}" if environ.get("HTTP_AUTHORIZATION", "").find("/s3/") >= 0 else f"other.{method}"


class _MotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:
        app = _LocalMiddleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def start_moto(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    """Start a moto server on 127.0.0.1 (``port=0``: a free port) and return it with its endpoint URL.

    Stop it with :func:`stop_moto`, which also closes its listening socket. Its transactions roll
    back item by item (:func:`infra.moto_patches._transact_item_by_item`), not from a copy of every table, and a
    table query reads only its partition (:func:`infra.moto_patches._query_reads_its_partition`).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per AWS call
    fix_moto_at_scale()
    server = _MotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return server, f"http://{host}:{bound_port}"


def stop_moto(server: ThreadedMotoServer) -> None:
    """Stop a server from :func:`start_moto` and close its socket (no ResourceWarning)."""
    server.stop()
    wsgi_server = getattr(server, "_server", None)  # moto keeps the werkzeug server private
    if wsgi_server is not None:
        wsgi_server.server_close()


def local_aws_env(endpoint: str, region: str = REGION) -> dict[str, str]:
    """The environment variables that point the AWS SDKs (boto3, aioboto3) at ``endpoint``.

    Dummy credentials, the region (``AWS_REGION`` as Lambda sets it, ``AWS_DEFAULT_REGION``
    as the SDKs read it) and ``AWS_ENDPOINT_URL``. Returned, never applied to ``os.environ``.
    """
    return {
        **_DUMMY_CREDENTIALS,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def local_client(endpoint: str, region: str, service: str) -> Any:  # boto3 ships no type information
    """A boto3 client of ``service`` on the moto server at ``endpoint`` (the caller closes it)."""
    return boto3.client(
        service,  # type: ignore[call-overload,unused-ignore]
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=_DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=_DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


@contextmanager
def clients(endpoint: str, region: str) -> Iterator[Callable[[str], Any]]:
    """Yield a factory of boto3 clients bound to ``endpoint``; all are closed on exit."""
    with ExitStack() as stack:
        made: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in made:
                made[service] = local_client(endpoint, region, service)
                stack.callback(made[service].close)
            return made[service]

        yield client


def main() -> int:
    """``python -m infra.moto_server``: a local moto server until the process is stopped; its endpoint
    printed once it listens (``moto listening on http://127.0.0.1:PORT``). The benchmark's own moto."""
    _, endpoint = start_moto()
    print(f"moto listening on {endpoint}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
