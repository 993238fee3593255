"""The fleet's shared rate limits in DynamoDB: one item per model, in the jobs table.

Item ``pk = BUDGET#<model>``, ``sk = BUDGET`` (a key space apart from ``JOB#…``: no job query
ever reads it), holding:

* ``m_<member>`` — one attribute per live member: ``{"until": its lease in epoch seconds, "rpm",
  "tpm": the rates it paces itself at (absent until it knows them)}``;
* ``rpm`` / ``tpm`` — the model's limits as a member last learned them from ``x-ratelimit-limit-*``;
* ``paused_until`` — epoch seconds: a 429 asked everyone to wait until then;
* ``model`` — for whoever reads the table.

Why one item and not an item per member: a join, a renewal or a leave is then *one*
``UpdateItem`` that writes this member's lease (plus any news) and returns the whole item
(``ReturnValues=ALL_NEW``) — the members, the limits, the pause — atomically; an item per member
would need a ``Query`` beside each write, twice the calls. The item stays small (about 40 bytes a
member) and its writes few (one per member per renewal, at most one a second each): far under
the 1,000 writes a second one partition takes. Leases are compared with the wall clock, which
Lambda keeps in step across containers to well under a second.

A member that dies leaves its attribute behind; it stops counting when its lease passes, and the
next member to write removes it once it has been expired for a whole lease (by then a member
merely slow to renew would have renewed: removing a live one would only make it re-add itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..engine.shared_limits import Observed, Share

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoSharedLimits", "shared_limits_pk"]

_MEMBER = "m_"
_MAX_REAPED = 20  # per write: an expression stays small however many members died


def shared_limits_pk(model: str) -> str:
    return f"BUDGET#{model}"


class DynamoSharedLimits:
    """:class:`~promptdrop.engine.shared_limits.SharedLimits` kept in one DynamoDB item per model."""

    def __init__(self, client: DynamoDBClient, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._ddb = client
        self._table = table
        self._clock = clock
        self._dead: dict[str, list[str]] = {}  # model -> attributes of members long expired, removed at the next write

    def _key(self, model: str) -> dict[str, Any]:
        return {"pk": {"S": shared_limits_pk(model)}, "sk": {"S": "BUDGET"}}

    async def join(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        return await self._write(model, member, lease_s, observed, joining=True)

    async def renew(self, model: str, member: str, *, lease_s: float, observed: Observed) -> Share:
        return await self._write(model, member, lease_s, observed, joining=False)

    async def leave(self, model: str, member: str) -> None:
        await self._ddb.update_item(
            TableName=self._table,
            Key=self._key(model),
            UpdateExpression="REMOVE #me",
            ExpressionAttributeNames={"#me": _MEMBER + member},
        )

    async def _write(self, model: str, member: str, lease_s: float, observed: Observed, *, joining: bool) -> Share:
        now = self._clock()
        names = {"#me": _MEMBER + member}
        seat = {"until": {"N": f"{now + lease_s:.3f}"}}
        for name, using in (("rpm", observed.using_rpm), ("tpm", observed.using_tpm)):
            if using is not None:
                seat[name] = {"N": f"{using:.3f}"}
        values: dict[str, Any] = {":seat": {"M": seat}}
        sets = ["#me = :seat"]
        news = {"rpm": observed.rpm, "tpm": observed.tpm, "paused_until": observed.paused_until}
        for name, value in news.items():
            if value is not None:
                names[f"#{name}"] = name
                values[f":{name}"] = {"N": f"{value:.3f}"}
                sets.append(f"#{name} = :{name}")
        if joining:
            names["#model"] = "model"
            values[":model"] = {"S": model}
            sets.append("#model = :model")
        expression = "SET " + ", ".join(sets)
        dead = [d for d in self._dead.pop(model, []) if d != names["#me"]][:_MAX_REAPED]
        if dead:
            names.update({f"#d{i}": name for i, name in enumerate(dead)})
            expression += " REMOVE " + ", ".join(f"#d{i}" for i in range(len(dead)))
        response = await self._ddb.update_item(
            TableName=self._table,
            Key=self._key(model),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return self._share(model, names["#me"], response.get("Attributes", {}), now, lease_s)

    def _share(self, model: str, me: str, item: dict[str, Any], now: float, lease_s: float) -> Share:
        live = unknown = 0
        others = [0.0, 0.0]
        dead: list[str] = []
        for name, value in item.items():
            if not name.startswith(_MEMBER) or "M" not in value:
                continue
            seat = value["M"]
            until = _number(seat.get("until")) or 0.0
            if until >= now:
                live += 1
                if name != me:
                    rpm, tpm = _number(seat.get("rpm")), _number(seat.get("tpm"))
                    unknown += rpm is None and tpm is None
                    others[0] += rpm or 0.0
                    others[1] += tpm or 0.0
            elif until < now - lease_s:
                dead.append(name)
        if dead:
            self._dead[model] = dead
        return Share(
            rpm=_number(item.get("rpm")),
            tpm=_number(item.get("tpm")),
            members=max(1, live),
            paused_until=_number(item.get("paused_until")) or 0.0,
            others_rpm=others[0],
            others_tpm=others[1],
            others_unknown=unknown,
        )


def _number(value: dict[str, Any] | None) -> float | None:
    return float(value["N"]) if value is not None and "N" in value else None
