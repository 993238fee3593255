"""What to inject: rules, outages and the configuration; and the counters a test reads back."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.aws_faults.calls import Call
from infra.aws_faults.errors import FaultKind, Service, error_for

__all__ = ["AwsFaultsConfig", "FaultRule", "FaultStats", "Outage"]


@dataclass(frozen=True)
class FaultRule:
    """Answer a share of matching calls with a fault.

    ``rate``: the probability that a matching call is faulted. ``service``/``operations`` narrow the calls
    (``None``/empty: every faultable service, every operation; operations are botocore's names, e.g.
    ``BatchWriteItem``, ``PutObject``, ``SendMessageBatch``). ``code`` picks the error (default: the
    service's usual one for ``kind``; needs ``service``). ``limit``: at most this many faults, then the
    rule is spent — ``FaultRule(FaultKind.AFTER_WRITE, service=Service.DYNAMODB,
    operations={"BatchWriteItem"}, limit=1)`` fails the next batch write after it happened.
    """

    kind: FaultKind
    rate: float = 1.0
    service: Service | None = None
    operations: Collection[str] = ()
    code: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "operations", frozenset(self.operations))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {self.rate}")
        if self.kind is FaultKind.OUTAGE:
            raise ValueError("an outage is not a rule: use Outage(...) or AwsFaultProxy.start_outage(...)")
        if self.kind is FaultKind.UNPROCESSED:
            if self.service not in (None, Service.DYNAMODB) or set(self.operations) - {"BatchWriteItem"}:
                raise ValueError("UNPROCESSED applies to DynamoDB BatchWriteItem only")
            if self.code is not None:
                raise ValueError("UNPROCESSED answers 200 with UnprocessedItems: it takes no error code")
        if self.code is not None:
            if self.service is None:
                raise ValueError(f"code={self.code!r} needs service=: error codes differ between services")
            error_for(self.service, self.kind, self.code)
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, not {self.limit}")

    def matches(self, call: Call) -> bool:
        if self.service is not None and call.service != self.service:
            return False
        if self.kind is FaultKind.UNPROCESSED and call.name != "dynamodb.BatchWriteItem":
            return False
        return not self.operations or call.operation in self.operations


@dataclass(frozen=True)
class Outage:
    """Every call to ``service`` (``None``: every faultable service) fails for ``duration_s`` seconds.

    It starts once the service has seen ``after_calls`` calls (the next one fails), or ``at_s`` seconds
    after the proxy started; exactly one of the two. It answers with ``code`` (default: the service's 500).
    """

    duration_s: float
    service: Service | None = None
    after_calls: int | None = None
    at_s: float | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        if (self.after_calls is None) == (self.at_s is None):
            raise ValueError("an Outage starts after_calls=K or at_s=T: give exactly one")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, not {self.duration_s}")
        if self.code is not None:
            if self.service is None:
                raise ValueError(f"code={self.code!r} needs service=: error codes differ between services")
            error_for(self.service, FaultKind.SERVER_ERROR, self.code)


@dataclass(frozen=True)
class AwsFaultsConfig:
    rules: Sequence[FaultRule] = ()
    outages: Sequence[Outage] = ()
    seed: int | None = None  # None: different faults on every run


@dataclass(frozen=True)
class FaultStats:
    """A snapshot of the counters, keyed by ``service.Operation`` (e.g. ``dynamodb.BatchWriteItem``)."""

    calls: Mapping[str, int]  # requests seen
    forwarded: Mapping[str, int]  # requests moto received (AFTER_WRITE and UNPROCESSED ones included)
    faults: Mapping[str, Mapping[str, int]]  # operation -> fault kind -> answers the client got
    upstream_errors: int = 0  # moto could not be reached (answered 502)

    def faults_of(self, kind: FaultKind | None = None, *, service: str | None = None) -> int:
        """Faults injected, of one kind or all, in one service or all."""
        return sum(
            n
            for name, kinds in self.faults.items()
            if service is None or name.partition(".")[0] == service
            for k, n in kinds.items()
            if kind is None or k == kind
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "forwarded": dict(self.forwarded),
            "faults": {name: dict(kinds) for name, kinds in self.faults.items()},
            "upstream_errors": self.upstream_errors,
        }
