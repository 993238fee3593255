"""The local stack refuses the parameter values CloudFormation refuses."""

from __future__ import annotations

import uuid

import pytest

from infra.local_aws import TemplateError, deploy


def _stack_name() -> str:
    return f"pd-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"OpenAIBaseUrl": "http://api.example.com/v1"}, "OpenAIBaseUrl.*AllowedPattern"),
        ({"MaxConcurrency": "5001"}, "MaxConcurrency.*MaxValue 5000"),
        ({"MaxConcurrency": "many"}, "MaxConcurrency.*not a number"),
        ({"OutputPrefix": ""}, "OutputPrefix.*MinLength"),
    ],
)
def test_parameters_cloudformation_refuses_are_refused(
    moto_endpoint: str, parameters: dict[str, str], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        deploy(moto_endpoint, stack_name=_stack_name(), parameters=parameters)
