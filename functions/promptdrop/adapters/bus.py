"""EventBridge: the completion event a job's final state publishes (README, "Completion event")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..jsonsafe import dumps

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient

__all__ = ["SOURCE", "EventNotPublished", "EventPublisher"]

SOURCE = "promptdrop"


class EventNotPublished(Exception):
    """EventBridge refused the event (the run fails and its message comes back: it is sent again)."""


class EventPublisher:
    def __init__(self, client: EventBridgeClient, bus: str) -> None:
        self._events = client
        self._bus = bus

    async def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        response = await self._events.put_events(
            Entries=[{"Source": SOURCE, "DetailType": detail_type, "Detail": dumps(detail), "EventBusName": self._bus}]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise EventNotPublished(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
