"""A fault-injecting HTTP proxy in front of the moto server: AWS as it behaves when it struggles.

The code under test reaches AWS only through ``AWS_ENDPOINT_URL``; point that at this proxy instead of
the moto server and a share of its S3, DynamoDB and SQS calls is answered the way AWS answers when it is
busy or failing — with the genuine status, error body and headers, so botocore parses the same error
code, and retries (or not) exactly as it would against AWS:

=================  ==========================================================================================
``THROTTLE``       answered instead of forwarded: DynamoDB ``ProvisionedThroughputExceededException`` (400;
                   or ``ThrottlingException``, ``RequestLimitExceeded``, and for transactions
                   ``TransactionCanceledException`` with ``ThrottlingError`` reasons), S3 ``SlowDown`` (503),
                   SQS ``RequestThrottled`` (400)
``SERVER_ERROR``   answered instead of forwarded: DynamoDB ``InternalServerError``, S3 and SQS
                   ``InternalError`` (500; or ``ServiceUnavailable``, 503)
``AFTER_WRITE``    forwarded — the call takes effect in moto — then moto's answer is dropped and the client
                   gets the service's 500: the write happened, the caller saw it fail (idempotency)
``UNPROCESSED``    DynamoDB ``BatchWriteItem`` only: a random proper subset of the items is forwarded, the
                   others come back as ``UnprocessedItems`` (a 200, as DynamoDB does when a batch is throttled)
``OUTAGE``         every call to a service fails (its 500 by default) for a window of seconds: started after
                   K calls, at a time, or on demand (:meth:`AwsFaultProxy.start_outage`, ``POST /_faults/outage``)
=================  ==========================================================================================

Everything else is forwarded unchanged: method, raw path and query, headers (``Host`` included, so moto
sees what the client signed) and body; the answer is streamed back with its headers (DynamoDB's
``x-amz-crc32`` included). Synthesized DynamoDB answers carry a correct ``x-amz-crc32`` too: botocore
checks it and would otherwise retry a good error as a corrupt one.

Faults come from :class:`FaultRule` s (a kind, a probability, optionally a service, operations, an error
code, a limit) tried in order, the first that fires wins; an outage window beats every rule. With a seed,
each rule decides the n-th call of an operation the same way on every run, however calls to *different*
operations interleave (one random stream per rule and operation).

Counters (:meth:`AwsFaultProxy.stats`, ``GET /_faults/stats``): calls seen, calls forwarded to moto, and
faults the client was answered with, per ``service.Operation`` and kind — so a test can prove its faults
really happened. For every operation: ``calls == forwarded + throttle + server_error + outage`` (the
other two kinds are forwarded).

Use from Python::

    with AwsFaultProxy(moto_endpoint, AwsFaultsConfig(rules=[FaultRule(FaultKind.THROTTLE, 0.3)], seed=7)) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        ...
        assert proxy.stats().faults_of(FaultKind.THROTTLE) > 0

or from a shell: ``python -m infra.aws_faults --target http://127.0.0.1:5000 --port 5001 --dynamodb-throttle 0.2``.
The proxy runs on its own event loop in a daemon thread (as :mod:`infra.fake_openai` does).

Not modelled: request signatures (moto does not check them; a rewritten ``BatchWriteItem`` body no longer
matches its signature), connection resets and timeouts (botocore retries those as it does 5xx), and
latency.

Modules: :mod:`.errors` (services, fault kinds, the errors AWS answers with), :mod:`.calls` (what a request
is), :mod:`.config` (rules, outages, counters), :mod:`.state` (which call gets which fault), :mod:`.answers`
(an error or a partial batch as AWS writes it), :mod:`.proxy` (forwarding, and the server in a thread),
:mod:`.cli` (the command line).
"""

from infra.aws_faults.calls import Call, classify
from infra.aws_faults.cli import arg_parser, config_from_args, main
from infra.aws_faults.config import AwsFaultsConfig, FaultRule, FaultStats, Outage
from infra.aws_faults.errors import AwsError, FaultKind, Protocol, Service, error_for
from infra.aws_faults.proxy import AwsFaultProxy

__all__ = [
    "AwsError",
    "AwsFaultProxy",
    "AwsFaultsConfig",
    "Call",
    "FaultKind",
    "FaultRule",
    "FaultStats",
    "Outage",
    "Protocol",
    "Service",
    "arg_parser",
    "classify",
    "config_from_args",
    "error_for",
    "main",
]
