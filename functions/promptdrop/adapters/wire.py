"""DynamoDB items kept in DynamoDB's own JSON on the way out and on the way in, not walked again.

The journal builds its items in DynamoDB JSON (``{"S": …}``, ``{"N": …}``: :mod:`.items`) and reads
them so. botocore's serializer copies every attribute value again, member by member, through the
service model (for a ``BatchWriteItem`` of 25 request items, about 8% of the handler's CPU per
answer), and its parser does the same to every item a ``Query`` returns. An attribute map whose
values are all plain (a string, a number, a boolean, a null) is the same JSON either way, so it is
passed on as it is; any other map (binary, sets, lists, nested maps) goes botocore's way, as does
everything that is not an attribute map.
"""

from __future__ import annotations

from typing import Any

from aiobotocore.parsers import AioJSONParser, AioResponseParserFactory
from botocore.serialize import JSONSerializer

__all__ = ["WireParserFactory", "WireSerializer", "serialize_plain_items_as_they_are"]

_TEXT = frozenset({"S", "N"})
_FLAGS = frozenset({"BOOL", "NULL"})


def _plain(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    ((kind, scalar),) = value.items()
    return (kind in _TEXT and type(scalar) is str) or (kind in _FLAGS and type(scalar) is bool)


def _plain_attributes(shape: Any, value: Any) -> bool:
    """A map of attribute values (an item, a key, expression values), every one of them plain."""
    return shape.value.name == "AttributeValue" and isinstance(value, dict) and all(map(_plain, value.values()))


class WireSerializer(JSONSerializer):
    """botocore's JSON serializer, but a map of plain attribute values is copied as it is."""

    def _serialize_type_map(self, serialized: dict[str, Any], value: Any, shape: Any, key: str) -> None:
        if _plain_attributes(shape, value):
            serialized[key] = value
            return
        super()._serialize_type_map(serialized, value, shape, key)  # type: ignore[misc]  # private in the stubs


def serialize_plain_items_as_they_are(client: Any) -> bool:
    """Give a DynamoDB client the :class:`WireSerializer`; False (and nothing changed) when its
    serializer is not botocore's plain JSON one (parameter validation on, or another botocore)."""
    serializer = getattr(client, "_serializer", None)  # botocore keeps it private: checked, not assumed
    if type(serializer) is not JSONSerializer:
        return False
    client._serializer = WireSerializer(timestamp_precision=serializer._timestamp_precision)  # type: ignore[attr-defined]
    return True


class _WireParser(AioJSONParser):
    """aiobotocore's JSON parser, but a map of plain attribute values is returned as it was read."""

    def _handle_map(self, shape: Any, value: Any) -> Any:
        if _plain_attributes(shape, value):
            return value
        return super()._handle_map(shape, value)  # type: ignore[misc]  # private in the stubs


class WireParserFactory(AioResponseParserFactory):
    """The session's parser factory (``register_component("response_parser_factory", …)``)."""

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "json":
            return _WireParser(**self._defaults)  # type: ignore[attr-defined]  # set by botocore's factory
        return super().create_parser(protocol_name)
