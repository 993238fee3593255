"""Where a route's credentials come from: a key in Secrets Manager, or a Bedrock token minted from
the function's own AWS credentials.

Neither value is ever logged: both are passed on to the client that sends them, and to the error
redaction that masks them in whatever the API answers back.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

from botocore.credentials import CredentialProvider, Credentials

if TYPE_CHECKING:
    import aioboto3
    from types_aiobotocore_secretsmanager import SecretsManagerClient

__all__ = ["BedrockTokens", "read_api_key"]


async def read_api_key(client: SecretsManagerClient, arn: str) -> str:
    """The key in the secret ``arn``: the value itself, or JSON with an ``OPENAI_API_KEY`` (or
    ``api_key``) field."""
    value = (await client.get_secret_value(SecretId=arn)).get("SecretString") or ""
    if value.lstrip().startswith("{"):
        data = json.loads(value)
        value = data.get("OPENAI_API_KEY") or data.get("api_key") or ""
    if not value.strip():
        raise ValueError(
            f"the secret {arn} holds no API key: store the key itself, or JSON with an OPENAI_API_KEY field"
        )
    return value.strip()


class _Given(CredentialProvider):
    """The credentials the AWS clients resolved, handed to the token generator (which would
    otherwise build a botocore session of its own and walk the credential chain again)."""

    METHOD = "promptdrop"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


class BedrockTokens:
    """Short-term Bedrock bearer tokens for one region, minted with ``aws-bedrock-token-generator``
    from the function's own credentials (its role, in Lambda).

    A token is a SigV4-presigned ``bedrock:CallWithBearerToken`` URL: it carries the role's
    permissions and no more, and expires after ``ttl_s`` — or with the session credentials that
    signed it, whichever is first: the lifetime is cut to what the credentials have left.
    """

    def __init__(self, session: aioboto3.Session, region: str, ttl_s: float) -> None:
        self._session = session
        self.region = region
        self._ttl_s = ttl_s

    async def mint(self, now: float) -> tuple[str, float]:
        """A new token and the seconds it is valid; ``now`` is the wall clock (epoch seconds), to cut
        its life to the credentials'. (The engine's ``TokenSource``.)"""
        from aws_bedrock_token_generator import provide_token  # on first use: only Bedrock routes need it

        resolved = await self._session.get_credentials()
        if resolved is None:
            raise RuntimeError("no AWS credentials to mint a Bedrock token with (the function's role?)")
        frozen = await resolved.get_frozen_credentials()
        ttl_s = self._ttl_s
        expiry = getattr(resolved, "_expiry_time", None)  # refreshable credentials (an assumed role) say when
        if expiry is not None:
            ttl_s = max(1.0, min(ttl_s, expiry.timestamp() - now))
        credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        token = provide_token(
            region=self.region, aws_credentials_provider=_Given(credentials), expiry=timedelta(seconds=int(ttl_s))
        )
        return token, float(int(ttl_s))
