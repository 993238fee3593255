"""Deciding: which call gets which fault, from the rules, the outage windows and their seeded random streams."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from infra.aws_faults.calls import Call
from infra.aws_faults.config import AwsFaultsConfig, FaultRule, FaultStats, Outage
from infra.aws_faults.errors import FAULTABLE, AwsError, FaultKind, Service, error_for

__all__ = ["FaultState"]


@dataclass(slots=True)
class _Decision:
    kind: FaultKind
    error: AwsError | None = None  # None for UNPROCESSED
    withhold: frozenset[int] = frozenset()  # UNPROCESSED: which of the batch's items come back unprocessed


@dataclass(slots=True)
class _LiveRule:
    rule: FaultRule
    index: int
    fired: int = 0
    rngs: dict[str, random.Random] = field(default_factory=dict)


@dataclass(slots=True)
class _Window:
    service: Service | None
    start: float
    end: float
    code: str | None

    def covers(self, service: Service, now: float) -> bool:
        return (self.service is None or self.service == service) and self.start <= now < self.end


class FaultState:
    """Rules, outages and counters; shared by the proxy's loop and the caller's thread (one lock)."""

    def __init__(self, config: AwsFaultsConfig, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._seed = config.seed
        self._rules = [_LiveRule(rule, i) for i, rule in enumerate(config.rules)]
        self._pending: list[Outage] = list(config.outages)
        self._windows: list[_Window] = []
        self._by_service: Counter[str] = Counter()  # calls per service, for outages that start after K calls
        self._calls: Counter[str] = Counter()
        self._forwarded: Counter[str] = Counter()
        self._faults: Counter[tuple[str, FaultKind]] = Counter()
        self._upstream_errors = 0

    def _rng(self, live: _LiveRule, call: Call) -> random.Random:
        rng = live.rngs.get(call.name)
        if rng is None:
            # One stream per rule and operation: the n-th PutItem is decided alike however other calls interleave.
            seed = None if self._seed is None else f"{self._seed}/{live.index}/{call.name}"
            rng = live.rngs[call.name] = random.Random(seed)
        return rng

    def decide(self, call: Call, batch_items: int) -> _Decision | None:
        """Count the call and decide its fault (None: forward it as it is)."""
        with self._lock:
            self._calls[call.name] += 1
            self._by_service[call.service] += 1
            if call.service not in FAULTABLE:
                return None
            service = Service(call.service)
            now = self._clock()
            window = self._outage(service, now)
            if window is not None:
                return _Decision(FaultKind.OUTAGE, error_for(service, FaultKind.SERVER_ERROR, window.code))
            for live in self._rules:
                rule = live.rule
                if not rule.matches(call) or (rule.kind is FaultKind.UNPROCESSED and batch_items < 2):
                    continue
                if rule.limit is not None and live.fired >= rule.limit:
                    continue
                rng = self._rng(live, call)
                if rng.random() >= rule.rate:
                    continue
                live.fired += 1
                if rule.kind is FaultKind.UNPROCESSED:
                    # A proper subset: DynamoDB answers a batch of which nothing was written with an error instead.
                    withheld = rng.sample(range(batch_items), rng.randint(1, batch_items - 1))
                    return _Decision(rule.kind, withhold=frozenset(withheld))
                return _Decision(rule.kind, error_for(service, rule.kind, rule.code))
            return None

    def _outage(self, service: Service, now: float) -> _Window | None:
        for outage in list(self._pending):
            if outage.service not in (None, service):
                continue
            if outage.at_s is not None:
                start = self._started + outage.at_s
                if now < start:
                    continue
            else:
                seen = self._by_service[service] if outage.service else sum(self._by_service.values())
                if outage.after_calls is None or seen <= outage.after_calls:
                    continue
                start = now
            self._pending.remove(outage)
            self._windows.append(_Window(outage.service, start, start + outage.duration_s, outage.code))
        self._windows = [w for w in self._windows if w.end > now]
        return next((w for w in self._windows if w.covers(service, now)), None)

    def count_fault(self, call: Call, kind: FaultKind) -> None:
        with self._lock:
            self._faults[call.name, kind] += 1

    def count_forwarded(self, call: Call) -> None:
        with self._lock:
            self._forwarded[call.name] += 1

    def count_upstream_error(self) -> None:
        with self._lock:
            self._upstream_errors += 1

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        with self._lock:
            self._rules = [_LiveRule(rule, i) for i, rule in enumerate(rules)]

    def add_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(_LiveRule(rule, len(self._rules)))

    def add_outage(self, outage: Outage) -> None:
        with self._lock:
            self._pending.append(outage)

    def start_outage(self, service: Service | None, duration_s: float, code: str | None) -> None:
        if code is not None:
            if service is None:
                raise ValueError(f"code={code!r} needs a service: error codes differ between services")
            error_for(service, FaultKind.SERVER_ERROR, code)
        with self._lock:
            now = self._clock()
            self._windows.append(_Window(service, now, now + duration_s, code))

    def end_outage(self, service: Service | None) -> None:
        """End the running outages of ``service`` (``None``: all of them, and those not started yet)."""
        with self._lock:
            now = self._clock()
            for window in self._windows:
                if service is None or window.service == service:
                    window.end = min(window.end, now)
            if service is None:
                self._pending.clear()

    def in_outage(self, service: Service) -> bool:
        with self._lock:
            return self._outage(service, self._clock()) is not None

    def stats(self) -> FaultStats:
        with self._lock:
            faults: dict[str, dict[str, int]] = {}
            for (name, kind), n in self._faults.items():
                faults.setdefault(name, {})[kind.value] = n
            return FaultStats(dict(self._calls), dict(self._forwarded), faults, self._upstream_errors)

    def reset_stats(self) -> None:
        with self._lock:
            self._calls.clear()
            self._forwarded.clear()
            self._faults.clear()
            self._upstream_errors = 0
