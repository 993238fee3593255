"""How one instance of the fake API checks who calls it — as the provider it stands in for would.

* ``bearer`` (OpenAI, a vLLM server started with ``--api-key``): ``Authorization: Bearer <key>``;
* ``api-key`` (Azure OpenAI): the key in an ``api-key`` header, and no ``Authorization``;
* ``bedrock`` (Amazon Bedrock's OpenAI-compatible endpoint): ``Authorization: Bearer <token>``, the token
  checked by its form, as ``aws-bedrock-token-generator`` builds it: ``bedrock-api-key-`` and the
  base64 of a SigV4-presigned ``bedrock.amazonaws.com/?Action=CallWithBearerToken…&Version=1`` URL,
  signed by the expected access key for the expected region, not yet expired (``X-Amz-Date`` plus
  ``X-Amz-Expires`` past now). The signature itself is not recomputed: the fake checks whose token
  it is and whether it is still good, which is what a client can get wrong.

The keys accepted can change while the server runs (:meth:`KeyCheck.accept`): a key rotated in its
secret, the old one honoured for a while and then revoked, as Secrets Manager rotations do.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AuthKind", "KeyCheck", "Refusal"]

AuthKind = Literal["bearer", "api-key", "bedrock"]
_BEDROCK_PREFIX = "bedrock-api-key-"


@dataclass(slots=True, frozen=True)
class Refusal:
    status: int
    error: tuple[str, str | None, str]  # (type, code, message), the body's error
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class KeyCheck:
    """One instance's check; ``seen`` counts each distinct credential accepted (a renewed token is a new one)."""

    kind: AuthKind = "bearer"
    keys: set[str] = field(default_factory=set)  # bearer / api-key; none: any caller is accepted
    access_key: str | None = None  # bedrock: whose tokens are accepted
    region: str | None = None
    clock: Callable[[], float] = time.time
    seen: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def accept(self, *keys: str) -> None:
        """Accept exactly these keys from now on (a rotation: both, then only the new one)."""
        self.keys = set(keys)

    def check(self, headers: Mapping[str, str]) -> Refusal | None:
        """Why the request is refused (None: it may go on)."""
        refusal = self._bedrock(headers) if self.kind == "bedrock" else self._key(headers)
        if refusal is not None:
            self.refused += 1
        return refusal

    def _accepted(self, credential: str) -> None:
        self.seen[credential] = self.seen.get(credential, 0) + 1

    def _key(self, headers: Mapping[str, str]) -> Refusal | None:
        if not self.keys:
            return None
        if self.kind == "api-key":
            given = headers.get("api-key", "")
            if "Authorization" in headers:
                return _unauthorized("an Azure key goes in the api-key header, not Authorization")
        else:
            given = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if given not in self.keys:
            return _wrong_key(given)
        self._accepted(given)
        return None

    def _bedrock(self, headers: Mapping[str, str]) -> Refusal | None:
        token = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        why, expired = self._token_problem(token)
        if why is not None:
            name = "ExpiredTokenException" if expired else "UnrecognizedClientException"
            return Refusal(403, (name, None, why), {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/"})
        self._accepted(token)
        return None

    def _token_problem(self, token: str) -> tuple[str | None, bool]:
        if not token.startswith(_BEDROCK_PREFIX):
            return "The security token included in the request is invalid.", False
        try:
            url = base64.b64decode(token.removeprefix(_BEDROCK_PREFIX), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "The security token included in the request is invalid.", False
        split = urllib.parse.urlsplit("https://" + url)
        query = dict(urllib.parse.parse_qsl(split.query))
        credential = query.get("X-Amz-Credential", "").split("/")
        well_formed = (
            split.netloc == "bedrock.amazonaws.com"
            and query.get("Action") == "CallWithBearerToken"
            and query.get("Version") == "1"
            and query.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256"
            and len(query.get("X-Amz-Signature", "")) == 64
            and len(credential) == 5
            and credential[3:] == ["bedrock", "aws4_request"]
        )
        if not well_formed:
            return "The security token included in the request is invalid.", False
        if credential[0] != self.access_key or credential[2] != self.region:
            return f"The token was not issued for this account and region ({credential[2]}).", False
        try:
            signed = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
            expires = int(query["X-Amz-Expires"])
        except (KeyError, ValueError):
            return "The security token included in the request is invalid.", False
        if self.clock() > signed + expires:
            return "Bearer Token has expired.", True
        return None, False

    def stats(self) -> dict[str, int]:
        return {"credentials_seen": len(self.seen), "refused": self.refused}


def _unauthorized(message: str) -> Refusal:
    return Refusal(401, ("invalid_request_error", "invalid_api_key", message))


def _wrong_key(key: str) -> Refusal:
    """OpenAI's 401 for a wrong key echoes part of it (the first 8 and last 4 characters): so does
    the fake, so that the product's masking of keys in stored errors is tested against it."""
    shown = f"{key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}" if len(key) > 12 else "***"
    return _unauthorized(
        f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
    )
