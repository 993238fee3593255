"""Which fault, if any, a request gets: per-prompt markers (counted per exact prompt text) or seeded random faults.

A marker is ``[[KIND]]`` or ``[[KIND:xN]]`` in the prompt text (``[[fail:500x2]]``, ``[[hang:x1]]``): with a count,
the first N requests carrying that exact prompt get the fault, then it behaves; without one, always. Several
counted markers in one prompt apply one after the other (``[[fail:500x1]] [[malformed:x1]]``: a 500, then a
malformed body, then an answer).

``[[flex_unavailable]]`` (with a count: ``[[flex_unavailable:x2]]``) refuses a ``service_tier: "flex"`` request
with a 429 ``resource_unavailable``, as the API does when flex capacity is short; a request at another tier
carrying it is answered (and counted against the marker all the same).

``[[output:NAME]]`` markers (``invalid_json``, ``schema_mismatch``, ``truncated``, ``refusal``, ``content_filter``,
``deep``; and answers that are not answers, :data:`~.misshapes.SHAPE_MARKERS`: ``queued``, ``in_progress``,
``failed``, ``empty``, ``bad_model``; ``[[output:refusal:x2]]`` or ``[[output:refusalx2]]`` with a count) do not
fail the request: it is answered 200, and the answer misbehaves that way.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Final

from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.misshapes import SHAPE_MARKERS

__all__ = ["OUTPUT_MARKERS", "Fault", "FaultPicker"]

#: What ``[[output:NAME]]`` makes an answer do (see :mod:`infra.fake_openai.endpoints`).
OUTPUT_MARKERS: Final = (
    "invalid_json",
    "schema_mismatch",
    "truncated",
    "refusal",
    "content_filter",
    "deep",
    *SHAPE_MARKERS,
)
_MARKER_RE: Final = re.compile(
    r"\[\[(?:fail:(?P<code>\d{3})|(?P<kind>hang|malformed|quota|flex_unavailable)|output:(?P<output>"
    + "|".join(OUTPUT_MARKERS)
    + r"))(?::?x(?P<count>\d+))?\]\]"
)
_MARKER_CACHE_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # "status", "quota", "hang", "malformed", "flex_unavailable", "output"
    status: int = 0
    #: For "output": which of :data:`OUTPUT_MARKERS` the answer does.
    output: str = ""


def _fault(match: re.Match[str]) -> Fault:
    if match["code"] is not None:
        return Fault("status", int(match["code"]))
    if match["output"] is not None:
        return Fault("output", output=match["output"])
    return Fault(match["kind"])


@dataclass(frozen=True, slots=True)
class _Marker:
    fault: Fault
    count: int | None  # None: always


class FaultPicker:
    """Picks the fault of each request. Used from the server's event loop only."""

    def __init__(self, config: FakeOpenAIConfig) -> None:
        self.rng = random.Random(config.seed)
        self.cut_500 = config.fail_500_rate
        self.cut_429 = self.cut_500 + config.fail_429_rate
        self.cut_hang = self.cut_429 + config.hang_rate
        self.cut_malformed = self.cut_hang + config.malformed_rate
        self.any_random = self.cut_malformed > 0
        self.markers_cache: dict[str, list[_Marker]] = {}
        #: prompt text -> requests seen carrying it (only for prompts with markers)
        self.seen: dict[str, int] = {}

    def reset(self) -> None:
        """Forget the marker counts (the random sequence goes on)."""
        self.seen.clear()

    def pick(self, text: str) -> tuple[Fault | None, str]:
        """The fault for a request whose prompt text is ``text``, and its name for ``/stats`` ``injected``."""
        fault = self._marker_fault(text) if "[[" in text else None
        if fault is not None:
            return fault, "marker"
        if not self.any_random:
            return None, ""
        fault = self._random_fault()
        if fault is None:
            return None, ""
        return fault, f"status_{fault.status}" if fault.kind == "status" else fault.kind

    def _markers(self, text: str) -> list[_Marker]:
        cached = self.markers_cache.get(text)
        if cached is None:
            cached = [
                _Marker(_fault(m), int(m["count"]) if m["count"] is not None else None)
                for m in _MARKER_RE.finditer(text)
            ]
            if len(self.markers_cache) < _MARKER_CACHE_MAX:
                self.markers_cache[text] = cached
        return cached

    def _marker_fault(self, text: str) -> Fault | None:
        markers = self._markers(text)
        if not markers:
            return None
        seen = self.seen.get(text, 0) + 1
        self.seen[text] = seen
        upto = 0
        for marker in markers:
            if marker.count is None:
                return marker.fault
            upto += marker.count
            if seen <= upto:
                return marker.fault
        return None

    def _random_fault(self) -> Fault | None:
        r = self.rng.random()
        if r < self.cut_500:
            return Fault("status", 500)
        if r < self.cut_429:
            return Fault("status", 429)
        if r < self.cut_hang:
            return Fault("hang")
        if r < self.cut_malformed:
            return Fault("malformed")
        return None
