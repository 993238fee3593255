"""One client per route, with its credentials: what the container sends each model through.

Built once per container, on the loop that uses it (each client's pool is bound to it). A model's
route is resolved once (:class:`~promptdrop.routes.RouteTable`) and its sender kept, so a request
pays one dict lookup for its route — and on the default table (one route) not even that: the
dispatcher is given the one client's sender directly (:attr:`Providers.single`).

Credentials by the route's ``auth``: ``secret`` and ``api-key`` read a key from Secrets Manager
(again after ``PROMPTDROP_SECRET_TTL_S``, and after a 401: :meth:`Providers.refresh`); ``bedrock``
mints a short-term token from the function's own credentials, renewed at half its life
(``engine/renewed_key.py``); ``none`` sends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .adapters.credentials import BedrockTokens, read_api_key
from .engine.client import KEY_AS_BEARER, LeanAsyncOpenAI, Reply, make_client
from .engine.dispatch import Sender
from .engine.errors import NoRoute
from .engine.renewed_key import RenewedKey
from .prices import PROVIDER, PriceSource, Rates, has_flex
from .routes import AuthKind, Route, RouteRates, RouteTable, bedrock_region
from .settings import Settings

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig

__all__ = ["Providers", "RouteClient"]

_KEY_HEADERS = {AuthKind.SECRET: KEY_AS_BEARER, AuthKind.BEDROCK: KEY_AS_BEARER, AuthKind.API_KEY: "api-key"}


@dataclass(slots=True)
class RouteClient:
    """One route's client and how its key is kept."""

    route: Route
    client: LeanAsyncOpenAI
    secret_arn: str | None = None  # secret, api-key: where its key is read
    tokens: RenewedKey | None = None  # bedrock: its token, renewed

    @property
    def send(self) -> Sender:
        return self.tokens.post_ready if self.tokens is not None else self.client.post_ready

    async def ready(self) -> LeanAsyncOpenAI:
        """The client, its token (if it has one) good for half its life at least."""
        if self.tokens is not None:
            await self.tokens.renew()
        return self.client


class Providers:
    """The container's route clients, asked per model."""

    def __init__(
        self,
        table: RouteTable,
        settings: Settings,
        session: aioboto3.Session,
        aws_config: AioConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._settings = settings
        self._session, self._aws_config = session, aws_config
        self._clock = clock
        self._routes: dict[str, RouteClient] = {}
        self._senders: dict[str, Sender] = {}
        self._cache_routes: dict[str, str] = {}
        self._keys_read_at = clock()
        self._key_rejected = False

    @classmethod
    async def open(
        cls, table: RouteTable, settings: Settings, session: aioboto3.Session, aws_config: AioConfig
    ) -> Providers:
        providers = cls(table, settings, session, aws_config)
        arns = {route.name: providers._secret_of(route) for route in table.routes}
        keys = await providers._read({arn for arn in arns.values() if arn is not None})
        for route in table.routes:
            arn = arns[route.name]
            providers._routes[route.name] = providers._client(route, arn, keys[arn] if arn is not None else None)
        return providers

    def _secret_of(self, route: Route) -> str | None:
        if route.auth not in (AuthKind.SECRET, AuthKind.API_KEY):
            return None
        return route.secret_arn or self._settings.openai_secret_arn  # settings.py: an api-key route has one

    def _client(self, route: Route, secret_arn: str | None, key: str | None) -> RouteClient:
        settings = self._settings
        client = make_client(
            # None: the SDK reads OPENAI_API_KEY (a secret route with no secret); a token comes later
            api_key=key if route.auth in (AuthKind.SECRET, AuthKind.API_KEY) else "",
            base_url=route.base_url,
            headers=route.headers,
            key_header=_KEY_HEADERS.get(route.auth),
            max_connections=settings.max_concurrency,
            timeout_s=settings.request_timeout_s,
        )
        if route.auth is AuthKind.BEDROCK:
            region = bedrock_region(route) or self._session.region_name
            if not region:
                raise ValueError(f"route {route.name!r}: no region to mint Bedrock tokens for; set its 'region'")
            tokens = BedrockTokens(self._session, region, route.token_ttl_s)
            return RouteClient(route, client, tokens=RenewedKey(client, tokens))
        return RouteClient(route, client, secret_arn=secret_arn)

    @property
    def single(self) -> RouteClient | None:
        """The one route of a table that has one (the default): its sender given to the dispatcher as is."""
        return next(iter(self._routes.values())) if len(self._routes) == 1 and not self.table.configured else None

    def route_client(self, model: str) -> RouteClient | None:
        """The client of the model's route (None: no route serves it) — how the Batch API mode, or any
        caller, finds "the client for model X" (``await route_client(model).ready()``)."""
        route = self.table.route_for(model)
        return self._routes[route.name] if route is not None else None

    async def batch_client(self, model: str) -> LeanAsyncOpenAI:
        """The client the Batch API mode uses for ``model``'s batches: its route's, its token fresh."""
        found = self.route_client(model)
        if found is None:
            raise NoRoute(f"no route serves the model {model!r}: add a route to PROMPTDROP_ROUTES that matches it")
        return await found.ready()

    def sender_of(self, model: str) -> Sender:
        """The engine's ``Sender`` for ``model``: its route's client (a model no route serves: each of
        its requests fails with ``no_route``)."""
        send = self._senders.get(model)
        if send is None:
            found = self.route_client(model)
            send = self._senders[model] = found.send if found is not None else _unrouted(model)
        return send

    def cache_route(self, model: str) -> str:
        """What the answer cache keys a model's answers by: its route's base URL (the API that answered)."""
        route = self._cache_routes.get(model)
        if route is None:
            found = self.route_client(model)
            route = self._cache_routes[model] = str(found.client.base_url) if found is not None else ""
        return route

    def limits_of(self, model: str) -> tuple[int | None, int | None]:
        """The model's requests/min and tokens/min: its route's, else ``PROMPTDROP_RPM``/``_TPM``."""
        route = self.table.route_for(model)
        rpm = route.rpm if route is not None and route.rpm is not None else self._settings.rpm
        tpm = route.tpm if route is not None and route.tpm is not None else self._settings.tpm
        return rpm, tpm

    def supports(self, model: str, mode: str) -> bool:
        """Whether the model's route offers a cost mode (``flex``, ``batch``: the route's ``modes``)."""
        route = self.table.route_for(model)
        return route is not None and mode in route.modes

    def offers_flex(self, model: str) -> bool:
        """A flex request to the model is worth sending: its route offers flex, and the model is priced apart for it."""
        return self.supports(model, "flex") and has_flex(model)

    def price_source(self, model: str) -> PriceSource:
        """Where the model's prices come from (``prices.use_sources``): its route's provider, or its own rates."""
        route = self.table.route_for(model)
        given = route.price_source if route is not None else PROVIDER
        if isinstance(given, RouteRates):
            cached = given.cached_input if given.cached_input is not None else given.input
            return Rates(model, given.input / 1e6, cached / 1e6, given.output / 1e6)
        return given

    def secrets(self) -> tuple[str, ...]:
        """The keys and tokens held now: masked in whatever an API answers back."""
        return tuple(r.client.api_key for r in self._routes.values() if r.client.api_key)

    def key_rejected(self) -> None:
        """An API answered 401: read the keys again, and mint new tokens, before the next run."""
        self._key_rejected = True

    async def refresh(self) -> None:
        """Re-read the keys from Secrets Manager after a 401, or once older than ``PROMPTDROP_SECRET_TTL_S``:
        a key fixed or rotated in its secret reaches warm containers without waiting for them to be
        recycled (a key from ``OPENAI_API_KEY`` cannot change). Tokens renew themselves; after a 401
        they are minted again too."""
        if not self._key_rejected and self._clock() - self._keys_read_at < self._settings.secret_ttl_s:
            return
        rejected, self._key_rejected = self._key_rejected, False
        await self._read_keys()
        if rejected:
            for route in self._routes.values():
                if route.tokens is not None:
                    await route.tokens.renew(force=True)

    async def _read_keys(self) -> None:
        keys = await self._read({r.secret_arn for r in self._routes.values() if r.secret_arn is not None})
        for route in self._routes.values():
            if route.secret_arn is not None:
                route.client.api_key = keys[route.secret_arn]

    async def _read(self, arns: set[str]) -> dict[str, str]:
        """Each secret's key, read once however many routes share it."""
        keys: dict[str, str] = {}
        if arns:
            async with self._session.client("secretsmanager", config=self._aws_config) as secrets:
                for arn in sorted(arns):
                    keys[arn] = await read_api_key(secrets, arn)
        self._keys_read_at = self._clock()
        return keys

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.client.close()


def _unrouted(model: str) -> Sender:
    async def refuse(path: str, body: bytes, timeout_s: float | None = None) -> Reply:
        raise NoRoute(f"no route serves the model {model!r}: add a route whose 'models' match it to PROMPTDROP_ROUTES")

    return refuse
