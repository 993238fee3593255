"""The routing table: which API each model is sent to, how it is authenticated, and its own limits.

``PROMPTDROP_ROUTES`` holds the table as JSON (a list of routes; README, "Routes"). A model goes to
the first route one of whose ``models`` globs matches its name (``fnmatch``, case-sensitive); a
model no route matches fails alone with ``no_route``. Unset, the table is one route for every
model — today's: ``OPENAI_BASE_URL`` or the SDK's default, the key from
``PROMPTDROP_OPENAI_SECRET_ARN`` or ``OPENAI_API_KEY`` — so a user who sets nothing sees no change.

A route is resolved once per model and kept (:meth:`RouteTable.route_for`): the per-request path
asks a dict, never the globs.

Plain configuration, no I/O: the clients and credentials a route needs are built by
:mod:`promptdrop.providers`.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_ROUTE", "AuthKind", "Route", "RouteRates", "RouteTable", "bedrock_region"]

DEFAULT_ROUTE = "default"
_MAX_RESOLVED = 4096  # models resolved and kept: past it the cache starts again (a file naming thousands)
# bedrock-runtime.<region>.amazonaws.com (and .com.cn…), bedrock-mantle.<region>.api.aws
# Plain http only to the machine itself (a proxy or gateway beside the function): a key never crosses a
# network in clear text — the rule of the template's OpenAIBaseUrl.
_LOOPBACK = re.compile(r"^http://(localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]{1,5})?(/|$)")
_BEDROCK_HOST = re.compile(r"^https://bedrock-(?:runtime|runtime-fips|mantle)\.([a-z]{2,8}(?:-[a-z0-9]+)+-\d+)\.")


class AuthKind(StrEnum):
    """How a route's requests are authenticated."""

    # Authorization: Bearer <key read from Secrets Manager> (or OPENAI_API_KEY). (A kind, not a secret.)
    SECRET = "secret"  # noqa: S105
    API_KEY = "api-key"  # Azure OpenAI: api-key: <key read from Secrets Manager>
    BEDROCK = "bedrock"  # Authorization: Bearer <short-term token minted from the function's own role>
    NONE = "none"  # nothing: a local server


class RouteRates(BaseModel):
    """Explicit prices in USD per million tokens (a model genai-prices does not know: a local server at 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Route(BaseModel):
    """One API the function sends to, and the models it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Names the route in logs and its limits' items.")
    models: tuple[str, ...] = Field(default=("*",), min_length=1, description="Model name globs (fnmatch).")
    base_url: str | None = Field(default=None, description="The API's base URL, ending in /v1 (unset: the SDK's).")
    auth: AuthKind = AuthKind.SECRET
    secret_arn: str | None = Field(default=None, description="secret / api-key: the key's secret (unset: the default).")
    region: str | None = Field(default=None, description="bedrock: the region tokens are minted for.")
    token_ttl_s: int = Field(default=900, ge=2, le=43_200, description="bedrock: how long a minted token is valid.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request of the route.")
    rpm: int | None = Field(default=None, ge=1, le=10**15, description="Requests/min per model (else PROMPTDROP_RPM).")
    tpm: int | None = Field(default=None, ge=1, le=10**15, description="Tokens/min per model (else PROMPTDROP_TPM).")
    # Prices: a genai-prices provider id ("openai", "azure", "aws"…) or explicit rates; unset: by auth.
    prices: str | RouteRates | None = None
    # The cost modes the route's API offers (flex: OpenAI's service tier; batch: its Batch API).
    modes: frozenset[Literal["flex", "batch"]] = frozenset({"flex", "batch"})

    @model_validator(mode="after")
    def _auth_needs(self) -> Route:
        if self.auth in (AuthKind.BEDROCK, AuthKind.API_KEY, AuthKind.NONE) and not self.base_url:
            raise ValueError(f"route {self.name!r}: auth {self.auth.value!r} needs a base_url")
        if self.base_url and not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"route {self.name!r}: base_url must be an http(s) URL, got {self.base_url!r}")
        plain = self.base_url is not None and self.base_url.startswith("http://")
        if plain and self.auth is not AuthKind.NONE and not _LOOPBACK.match(self.base_url or ""):
            raise ValueError(
                f"route {self.name!r}: its credentials would cross the network in clear text: use https "
                "(plain http only for localhost, 127.x.x.x or [::1], or with auth 'none')"
            )
        if any(name.lower() in ("authorization", "api-key") for name in self.headers):
            raise ValueError(f"route {self.name!r}: credentials go in 'auth', not in 'headers'")
        return self

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    @property
    def price_source(self) -> str | RouteRates:
        """Its ``prices``, else the provider its auth says it is: Bedrock's (``aws``), Azure's, OpenAI's."""
        if self.prices is not None:
            return self.prices
        return {AuthKind.BEDROCK: "aws", AuthKind.API_KEY: "azure"}.get(self.auth, "openai")


def bedrock_region(route: Route) -> str | None:
    """The region a Bedrock route's tokens are minted for: its own, else its base URL's (None: unknown)."""
    if route.region:
        return route.region
    found = _BEDROCK_HOST.match(route.base_url or "")
    return found.group(1) if found else None


class RouteTable:
    """The routes in order; a model's route resolved once and kept."""

    def __init__(self, routes: tuple[Route, ...] = ()) -> None:
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names must be unique: {names}")
        self.configured = bool(routes)
        self.routes = routes or (Route(name=DEFAULT_ROUTE),)
        self._resolved: dict[str, Route | None] = {}

    def route_for(self, model: str) -> Route | None:
        """The first route serving ``model`` (None: no route does)."""
        try:
            return self._resolved[model]
        except KeyError:
            pass
        if len(self._resolved) >= _MAX_RESOLVED:
            self._resolved.clear()
        found = self._resolved[model] = next((r for r in self.routes if r.serves(model)), None)
        return found

    def limit_key(self, model: str) -> str:
        """What a model's shared limits are kept under: the model alone in the default table (today's
        ``BUDGET#<model>``), else ``<route>/<model>`` — the same model behind two providers has two limits."""
        route = self.route_for(model)
        return model if not self.configured or route is None else f"{route.name}/{model}"
