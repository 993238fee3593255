"""template.yaml as written (SAM) and as deployed (CloudFormation, after the SAM transform), offline.

Shared by the template's structure tests and its security scan.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import decode
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

__all__ = ["REGION", "TEMPLATE", "lint_template", "raw_template", "transform"]

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
# What `sam package` puts in place of the local CodeUri; the transform needs an S3 URI.
PACKAGED_CODE_URI = "s3://promptdrop-artifacts/processor.zip"


def raw_template() -> dict[str, Any]:
    """template.yaml as cfn-lint reads it, as plain JSON-like values."""
    template, matches = decode(str(TEMPLATE))
    assert not matches, [str(m) for m in matches]
    assert template is not None
    # cfn-lint's node types subclass dict/str; a JSON round trip makes them plain.
    plain: dict[str, Any] = json.loads(json.dumps(template))
    return plain


def _no_managed_policy_names() -> dict[str, str]:
    raise AssertionError("the template names an AWS managed policy: the transform would need AWS")


def transform(template: dict[str, Any]) -> dict[str, Any]:
    """The SAM transform, run locally with aws-sam-translator (what CloudFormation deploys)."""
    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = PACKAGED_CODE_URI
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    transformed: dict[str, Any] = translator.translate(
        sam, parameter_values={}, get_managed_policy_map=_no_managed_policy_names
    )
    return transformed


def lint_template(template: dict[str, Any] | str) -> list[Any]:
    """cfn-lint's matches for a template (a dict, or YAML/JSON text)."""
    text = template if isinstance(template, str) else json.dumps(template)
    return lint(text, config=ManualArgs(regions=[REGION]))
