"""``auto``'s deadline: when the answers are due, and the latest point to stop waiting for batches.

The deadline is the upload's ``promptdrop-deadline`` (else ``PROMPTDROP_DEADLINE``): a duration from
the job's start (``90m``, ``6h``, ``2d``) or an ISO 8601 time. The switch point is the deadline less
the time the lines not yet answered would take in real time at the account's rate —
``PROMPTDROP_RPM`` when it is configured, else :data:`ASSUMED_RPM` — and a margin
for cancelling the batches and merging what they finished (:data:`MARGIN_S`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from ..formats import FileRejected
from ..records import FailureCode, JobRecord
from ..settings import Settings
from .batch_state import UnitBatches

__all__ = ["ASSUMED_RPM", "DEADLINE_METADATA", "MARGIN_S", "deadline_of", "switch_at"]

DEADLINE_METADATA = "promptdrop-deadline"
ASSUMED_RPM = 500  # requests/min taken for the account when none is configured: a low tier's
MARGIN_S = 600.0  # cancelling the batches, merging what they finished, flex's slower answers
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def deadline_of(settings: Settings, metadata: Mapping[str, str], started: float) -> float:
    """The deadline as epoch seconds (a duration counts from ``started``); a value that is neither
    fails the file with ``invalid_deadline``."""
    text = metadata.get(DEADLINE_METADATA) or settings.deadline
    duration = _DURATION.match(text)
    if duration:
        return started + float(duration.group(1)) * _UNIT_S[duration.group(2).lower()]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FileRejected(
            FailureCode.INVALID_DEADLINE,
            f"{DEADLINE_METADATA}={text[:40]!r} is neither a duration (90m, 6h, 2d) nor an ISO 8601 time",
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def switch_at(settings: Settings, metadata: Mapping[str, str], job: JobRecord | None, state: UnitBatches) -> float:
    """When ``auto`` stops waiting for the unit's batches (epoch seconds)."""
    started = _started(job)
    requests, done, failed = state.provider_counts
    left = max(0, requests - done - failed)
    if not state.submitted:
        left = max(left, (job.line_count or 0) - (job.progress_done if job else 0)) if job else left
    rpm = settings.rpm or ASSUMED_RPM
    return deadline_of(settings, metadata, started) - MARGIN_S - left / rpm * 60.0


def _started(job: JobRecord | None) -> float:
    if job is None or not job.started_at:
        return datetime.now(UTC).timestamp()
    return datetime.fromisoformat(job.started_at.replace("Z", "+00:00")).timestamp()
