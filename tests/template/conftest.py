"""The template as the tests read it: as written (SAM) and as CloudFormation deploys it (transformed),
built once per test module."""

from __future__ import annotations

from typing import Any

import pytest

from tests.template.sam import raw_template, transform


@pytest.fixture(scope="module")
def sam_template() -> dict[str, Any]:
    return raw_template()


@pytest.fixture(scope="module")
def cfn_template(sam_template: dict[str, Any]) -> dict[str, Any]:
    return transform(sam_template)
