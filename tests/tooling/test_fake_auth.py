"""The fake API checks each instance's auth as the provider it stands in for: a bearer key, Azure's
``api-key`` header, a Bedrock token by its form, its signer, its region and its expiry."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from aws_bedrock_token_generator import provide_token
from botocore.credentials import CredentialProvider, Credentials

from infra.fake_openai.auth import KeyCheck


class _Given(CredentialProvider):  # type: ignore[misc]
    METHOD = "test"

    def __init__(self, access_key: str) -> None:
        super().__init__()
        self._credentials = Credentials(access_key, "secret", "session")

    def load(self) -> Credentials:
        return self._credentials


def token(access_key: str = "AKIDTEST", region: str = "us-west-2", ttl_s: int = 60) -> str:
    return provide_token(region=region, aws_credentials_provider=_Given(access_key), expiry=timedelta(seconds=ttl_s))


def bedrock(now: float | None = None) -> KeyCheck:
    return KeyCheck("bedrock", access_key="AKIDTEST", region="us-west-2", clock=lambda: now or time.time())


def test_a_bedrock_token_of_the_right_signer_and_region_is_accepted_until_it_expires() -> None:
    minted = token(ttl_s=60)
    assert bedrock().check({"Authorization": f"Bearer {minted}"}) is None
    later = bedrock(now=time.time() + 120)
    refusal = later.check({"Authorization": f"Bearer {minted}"})
    assert refusal is not None
    assert (refusal.status, refusal.error[0]) == (403, "ExpiredTokenException")
    assert refusal.headers["x-amzn-ErrorType"].startswith("ExpiredTokenException:")


@pytest.mark.parametrize(
    "given",
    [
        token(access_key="AKIDOTHER"),  # someone else's
        token(region="eu-west-1"),  # another region's
        "bedrock-api-key-bm90IGEgdXJs",  # the prefix, not a presigned URL
        "sk-a-plain-openai-key",
    ],
)
def test_a_bedrock_token_not_ours_is_refused_as_unrecognized(given: str) -> None:
    refusal = bedrock().check({"Authorization": f"Bearer {given}"})
    assert refusal is not None
    assert (refusal.status, refusal.error[0]) == (403, "UnrecognizedClientException")


def test_an_azure_key_goes_in_its_own_header_only() -> None:
    check = KeyCheck("api-key", {"azure-key"})
    assert check.check({"api-key": "azure-key"}) is None
    assert check.check({"Authorization": "Bearer azure-key"}) is not None
    assert check.check({"api-key": "azure-key", "Authorization": "Bearer azure-key"}) is not None
    assert check.stats() == {"credentials_seen": 1, "refused": 2}


def test_a_rotation_honours_both_keys_then_only_the_new_one() -> None:
    check = KeyCheck("bearer", {"old"})
    check.accept("old", "new")
    assert check.check({"Authorization": "Bearer old"}) is None
    assert check.check({"Authorization": "Bearer new"}) is None
    check.accept("new")
    refusal = check.check({"Authorization": "Bearer old"})
    assert refusal is not None
    assert refusal.status == 401
