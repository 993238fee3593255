"""How the CLI writes numbers, times and money (the rate and ETA are the job item's: ``records.JobRecord``).

Plain functions of plain values (no I/O, no clock of their own): the views and the tests share them.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "duration", "money", "now_iso", "number", "parse_time", "rate", "seconds_between"]


def now_iso() -> str:
    """Now, as the function writes times on the job item."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> datetime | None:
    """An ISO timestamp from the job item (``...Z`` or ``+00:00``) as an aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: str | None, end: str | None) -> float | None:
    first, last = parse_time(start), parse_time(end)
    if first is None or last is None:
        return None
    return max(0.0, (last - first).total_seconds())


def duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def ago(value: str | None, now: datetime) -> str:
    seconds = seconds_between(value, now.isoformat())
    return "-" if seconds is None else f"{duration(seconds)} ago"


def number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def money(value: float | str | None) -> str:
    """Dollars to the 1/10,000th of a cent the estimate carries; ``-`` when there is no estimate."""
    if value is None or value == "":
        return "-"
    return f"${float(value):.6f}".rstrip("0").rstrip(".") if float(value) else "$0"


def rate(per_second: float | None) -> str:
    if per_second is None:
        return "-"
    return f"{per_second:.1f}/s" if per_second < 100 else f"{per_second:,.0f}/s"
