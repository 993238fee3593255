"""The DynamoDB client's serializer passes plain attribute maps on as they are — the same request body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest
from aiobotocore.parsers import AioResponseParserFactory
from botocore.config import Config
from botocore.serialize import JSONSerializer
from promptdrop.adapters.items import request_to_item
from promptdrop.adapters.wire import WireParserFactory, WireSerializer, serialize_plain_items_as_they_are
from promptdrop.records import RequestRecord, RequestStatus


def _client(*, validation: bool = False) -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=validation),
    )


def _records() -> list[RequestRecord]:
    answered = RequestRecord(
        custom_id="q-1", line=1, status=RequestStatus.SUCCEEDED, attempts=1, model="gpt-4o-mini", latency_ms=210,
        status_code=200, request_id="req_1", prompt_tokens=12, completion_tokens=3, finish_reason="stop",
        response=json.dumps({"choices": [{"message": {"content": "héllo \"quoted\" \ud83d\ude00"}}]}),
    )  # fmt: skip
    failed = RequestRecord(
        custom_id="q-2", line=2, status=RequestStatus.FAILED, attempts=6, status_code=400,
        error={"code": "invalid_request", "message": "no"},  # a map: botocore's way
    )  # fmt: skip
    return [answered, failed]


ITEMS = [{"PutRequest": {"Item": request_to_item("j", r, "now", 99)}} for r in _records()]
PARAMETERS: list[tuple[str, dict[str, Any]]] = [
    ("BatchWriteItem", {"RequestItems": {"t": ITEMS}}),
    ("PutItem", {"TableName": "t", "Item": {"pk": {"S": "a"}, "blob": {"B": b"\x00\xff"}, "flag": {"BOOL": True}}}),
    ("PutItem", {"TableName": "t", "Item": {"pk": {"S": "a"}, "nothing": {"NULL": True}, "tags": {"SS": ["x", "y"]}}}),
    ("Query", {"TableName": "t", "KeyConditionExpression": "pk = :pk",
               "ExpressionAttributeValues": {":pk": {"S": "JOB#1"}},
               "ExclusiveStartKey": {"pk": {"S": "JOB#1"}, "sk": {"S": "REQ#q"}}}),
    ("UpdateItem", {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}}, "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":list": {"L": [{"S": "x"}, {"B": b"\x01"}]}}}),
]  # fmt: skip


@pytest.mark.parametrize(("operation", "parameters"), PARAMETERS, ids=[p[0] for p in PARAMETERS])
def test_a_request_body_is_the_same_as_botocores(operation: str, parameters: dict[str, Any]) -> None:
    # Given botocore's own serializer and the wire serializer, on the same client's model
    client = _client()
    model = client.meta.service_model.operation_model(operation)
    botocores = JSONSerializer().serialize_to_request(parameters, model)

    # When the client's serializer is replaced
    assert serialize_plain_items_as_they_are(client)

    # Then the request is byte for byte the same, binary values and nested maps included
    assert isinstance(client._serializer, WireSerializer)
    assert client._serializer.serialize_to_request(parameters, model) == botocores


def test_plain_items_are_not_walked_but_binary_ones_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a wire serializer that counts the attribute values botocore walks member by member
    walked: list[str] = []
    serializer = WireSerializer()
    original = JSONSerializer._serialize_type_structure

    def counting(self: Any, serialized: Any, value: Any, shape: Any, key: Any) -> None:
        if shape.name == "AttributeValue":
            walked.append(next(iter(value)))
        original(self, serialized, value, shape, key)

    monkeypatch.setattr(JSONSerializer, "_serialize_type_structure", counting)
    model = _client().meta.service_model.operation_model("PutItem")

    # When a plain item and then an item with a binary value are serialized
    serializer.serialize_to_request({"TableName": "t", "Item": {"pk": {"S": "a"}, "n": {"N": "1"}}}, model)
    plain = list(walked)
    serializer.serialize_to_request({"TableName": "t", "Item": {"pk": {"S": "a"}, "b": {"B": b"\x00"}}}, model)

    # Then only the second was walked (and base64-encoded by botocore)
    assert plain == []
    assert sorted(walked) == ["B", "S"]


def test_a_client_that_validates_its_parameters_keeps_botocores_serializer() -> None:
    client = _client(validation=True)
    assert not serialize_plain_items_as_they_are(client)
    assert not isinstance(client._serializer, WireSerializer)


# -- the parser: what a Query returns ------------------------------------------------------------------------

QUERY_RESPONSE = {
    "Items": [
        request_to_item("j", _records()[0], "now", 99),
        request_to_item("j", _records()[1], "now"),  # its error is a map: botocore's way
        {"pk": {"S": "a"}, "blob": {"B": "AP8="}, "flag": {"BOOL": False}, "none": {"NULL": True}},
        {"pk": {"S": "b"}, "tags": {"SS": ["x"]}, "list": {"L": [{"N": "1"}, {"B": "AQ=="}]}},
    ],
    "Count": 4,
    "ScannedCount": 4,
    "LastEvaluatedKey": {"pk": {"S": "b"}, "sk": {"S": "REQ#q"}},
}


def _parse(factory: Any, body: dict[str, Any]) -> Any:
    model = _client().meta.service_model.operation_model("Query")
    response = {"status_code": 200, "headers": {}, "body": json.dumps(body).encode()}
    parsed = asyncio.run(factory.create_parser("json").parse(response, model.output_shape))
    parsed.pop("ResponseMetadata", None)
    return parsed


def test_a_query_answer_is_parsed_as_botocore_parses_it() -> None:
    # When the same Query answer is parsed by aiobotocore's parser and by the wire parser
    ours, theirs = _parse(WireParserFactory(), QUERY_RESPONSE), _parse(AioResponseParserFactory(), QUERY_RESPONSE)

    # Then the results are equal: binary values decoded to bytes, maps and lists walked
    assert ours == theirs
    assert ours["Items"][2]["blob"] == {"B": b"\x00\xff"}
    assert ours["Items"][3]["list"] == {"L": [{"N": "1"}, {"B": b"\x01"}]}
    assert ours["Items"][0]["response"]["S"].startswith('{"choices"')
