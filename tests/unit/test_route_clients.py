"""Per route: its token renewed once per half validity period, its own sender and limits, and a model no
route serves failing alone."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import AsyncIterator

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from botocore.credentials import Credentials
from promptdrop.adapters.credentials import BedrockTokens
from promptdrop.engine.client import Reply, make_client
from promptdrop.engine.dispatch import Dispatcher, Outcome
from promptdrop.engine.errors import CredentialsUnavailable, Disposition
from promptdrop.engine.model_limiters import ModelLimiters
from promptdrop.engine.renewed_key import RenewedKey
from promptdrop.engine.request import Request
from promptdrop.routes import Route, RouteTable

from tests.fakes import FakeClock, MemorySharedLimits, Timeline
from tests.unit.test_errors_and_retries import completion

BEDROCK_URL = "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1"


class CountingSource:
    """Tokens numbered in order, each valid ``valid_s``; minting yields to the loop, as the real one may."""

    def __init__(self, valid_s: float = 60.0, *, failing: bool = False) -> None:
        self.valid_s = valid_s
        self.failing = failing
        self.minted = 0

    async def mint(self, now: float) -> tuple[str, float]:
        await asyncio.sleep(0)
        if self.failing:
            raise RuntimeError("no credentials")
        self.minted += 1
        return f"token-{self.minted}", self.valid_s


def renewed(source: CountingSource, clock: FakeClock) -> RenewedKey:
    client = make_client(api_key="", base_url=BEDROCK_URL, max_connections=1, timeout_s=5)
    return RenewedKey(client, source, clock=clock, wall=clock)


async def test_a_token_is_minted_once_for_every_worker_then_again_at_half_its_life() -> None:
    clock, source = FakeClock(), CountingSource(valid_s=60)
    key = renewed(source, clock)
    # Given twenty workers sending at once with no token yet: one mint, all wait for it
    await asyncio.gather(*(key.renew() for _ in range(20)))
    assert (source.minted, key.key) == (1, "token-1")
    # When less than half its life has passed: no new token
    clock.now += 29
    await key.renew()
    assert source.minted == 1
    # Then past half its life, a new one (the old one still has 30 s: no request goes out on a dying token)
    clock.now += 1
    await asyncio.gather(*(key.renew() for _ in range(5)))
    assert (source.minted, key.key) == (2, "token-2")


async def test_a_rejected_token_is_replaced_at_once_when_forced() -> None:
    clock, source = FakeClock(), CountingSource()
    key = renewed(source, clock)
    await key.renew()
    await key.renew(force=True)
    assert (source.minted, key.key) == (2, "token-2")


async def test_a_token_that_cannot_be_minted_is_a_typed_fatal_failure() -> None:
    key = renewed(CountingSource(failing=True), FakeClock())
    with pytest.raises(CredentialsUnavailable, match=r"could not mint a token for .*bedrock-runtime"):
        await key.renew()


async def test_the_bedrock_token_is_a_presigned_call_with_bearer_token_url_for_the_region() -> None:
    # Given the function's credentials (in Lambda: its role's; here given to the session)
    session = aioboto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret-example", region_name="us-east-1"
    )
    # When a token is minted for a route in us-west-2, valid 900 s
    token, valid_s = await BedrockTokens(session, "us-west-2", 900).mint(now=0.0)
    # Then it is the documented form: a prefix and a base64 SigV4-presigned URL, signed by those credentials
    assert token.startswith("bedrock-api-key-")
    url = base64.b64decode(token.removeprefix("bedrock-api-key-")).decode()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit("https://" + url).query)
    assert url.startswith("bedrock.amazonaws.com/?")
    assert query["Action"] == ["CallWithBearerToken"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert query["X-Amz-Credential"][0].endswith("/us-west-2/bedrock/aws4_request")
    assert (query["X-Amz-Expires"], query["Version"], valid_s) == (["900"], ["1"], 900.0)
    assert "secret-example" not in url


def request(line: int, model: str) -> Request:
    return Request(line, f"r{line}", json.dumps({"model": model, "messages": []}).encode(), 10, model=model)


async def test_each_model_goes_through_its_routes_sender_with_its_routes_limits() -> None:
    # Given two routes, each with its sender and the fast one with its own requests/min
    sent: dict[str, list[str]] = {"fast": [], "slow": []}

    def sender_for(route: str) -> object:
        async def send(path: str, body: bytes) -> Reply:
            sent[route].append(json.loads(body)["model"])
            return completion()

        return send

    table = RouteTable(
        (Route(name="slow", models=("slow-*",), rpm=60), Route(name="fast", models=("*",), rpm=6000, tpm=10**6))
    )
    senders = {"slow": sender_for("slow"), "fast": sender_for("fast")}

    def limits_of(model: str) -> tuple[int | None, int | None]:
        route = table.route_for(model)
        assert route is not None
        return route.rpm, route.tpm

    clock = FakeClock()
    limiters = ModelLimiters(limits_of=limits_of, key_of=table.limit_key, clock=clock, wall=clock, sleep=clock.sleep)
    dispatcher = Dispatcher(
        None,
        senders=lambda model: senders[table.route_for(model).name],  # type: ignore[union-attr,return-value]
        limiter=limiters,
        max_concurrency=4,
        max_attempts=1,
        clock=clock,
        sleep=clock.sleep,
    )
    outcomes: list[Outcome] = []

    async def requests() -> AsyncIterator[Request]:
        for line, model in enumerate(["slow-1", "gpt-4o-mini", "slow-1", "gpt-4.1"]):
            yield request(line, model)

    async def collect(outcome: Outcome) -> None:
        outcomes.append(outcome)

    # When a file mixing them runs
    await dispatcher.run(requests(), collect)

    # Then each request went to its route, each model paced by its route's limits
    assert (sorted(sent["slow"]), sorted(sent["fast"])) == (["slow-1", "slow-1"], ["gpt-4.1", "gpt-4o-mini"])
    assert [o.error for o in outcomes] == [None] * 4
    assert limiters.limiter("slow-1").pace.limits[0] == 60
    assert limiters.limiter("gpt-4o-mini").pace.limits == (6000, 10**6)


async def test_a_models_share_of_the_fleets_limits_is_kept_under_its_routes_name() -> None:
    # Given a configured table: the same model behind two providers has two limits
    table = RouteTable((Route(name="azure", models=("gpt-*",), base_url="https://x.example/v1"),))
    clock = Timeline()
    shared = MemorySharedLimits(clock)
    limiters = ModelLimiters(shared=shared, key_of=table.limit_key, clock=clock, wall=clock, sleep=clock.sleep)
    # When a run sends to a model of the route
    async with limiters.membership() as membership:
        await membership.limiter_for(request(1, "gpt-4o-mini"))
        # Then its seat is in the route's item for the model
        assert set(shared.leases) == {"azure/gpt-4o-mini"}
    assert shared.leases["azure/gpt-4o-mini"] == {}  # left at the end of the run


async def test_a_model_no_route_serves_fails_alone_with_no_route() -> None:
    from promptdrop.providers import Providers  # a table of one keyless route: no AWS call is made
    from promptdrop.settings import Settings

    table = RouteTable((Route(name="local", models=("llama-*",), base_url="http://127.0.0.1:9/v1", auth="none"),))
    settings = Settings(table="t", dlq_url="d")
    providers = await Providers.open(table, settings, aioboto3.Session(region_name="us-east-1"), AioConfig())
    try:
        dispatcher = Dispatcher(
            None, senders=providers.sender_of, limiter=ModelLimiters(), max_concurrency=1, max_attempts=3
        )
        outcomes: list[Outcome] = []

        async def requests() -> AsyncIterator[Request]:
            yield request(1, "gpt-4o-mini")

        async def collect(outcome: Outcome) -> None:
            outcomes.append(outcome)

        report = await dispatcher.run(requests(), collect)
        (outcome,) = outcomes
        assert outcome.error is not None
        assert (outcome.error.code, outcome.error.disposition, outcome.attempts) == (
            "no_route",
            Disposition.PERMANENT,
            1,
        )
        assert "no route serves the model 'gpt-4o-mini'" in outcome.error.message
        assert report.fatal is None
        assert providers.cache_route("llama-3") == "http://127.0.0.1:9/v1/"
    finally:
        await providers.aclose()


async def test_each_route_prices_its_models_from_its_own_source() -> None:
    from promptdrop import prices
    from promptdrop.providers import Providers
    from promptdrop.settings import Settings

    # Given Bedrock's models priced as Bedrock's (genai-prices' "aws"), a local server's at its own rates
    table = RouteTable(
        (
            Route(name="bedrock", models=("openai.gpt-oss-*",), base_url=BEDROCK_URL, auth="bedrock"),
            Route(
                name="local",
                models=("llama-*",),
                base_url="http://127.0.0.1:9/v1",
                auth="none",
                prices={"input": 0.5, "output": 1.0},
                modes=frozenset(),
            ),
            Route(name="openai", models=("*",), base_url="http://127.0.0.1:9/v1", auth="none", prices="openai"),
        )
    )
    providers = Providers(
        table, Settings(table="t", dlq_url="d"), aioboto3.Session(region_name="us-east-1"), AioConfig()
    )
    prices.use_sources(providers.price_source)
    try:
        bedrock = prices.rates("openai.gpt-oss-120b-1:0")
        assert bedrock is not None
        assert bedrock.provider == "aws"
        assert prices.cost_usd("llama-3", 1_000_000, 1_000_000) == pytest.approx(1.5)
        assert prices.rates("gpt-4o-mini").provider == "openai"  # type: ignore[union-attr]
        # and flex goes only where the route offers it and the model has a flex price
        assert providers.offers_flex("gpt-5-mini")
        assert not providers.offers_flex("llama-3")
        assert not providers.supports("llama-3", "batch")
    finally:
        prices.use_sources(None)
    assert prices.rates("openai.gpt-oss-120b-1:0") is None  # OpenAI's prices again: it knows no such model


class ExpiringCredentials:
    """What aiobotocore resolves for an assumed role: refreshable credentials that say when they expire."""

    def __init__(self, expires_at: float) -> None:
        import datetime

        self._expiry_time = datetime.datetime.fromtimestamp(expires_at, tz=datetime.UTC)

    async def get_frozen_credentials(self) -> Credentials:
        return Credentials("ASIAROLE", "secret", "session-token")


class RoleSession:
    def __init__(self, expires_at: float) -> None:
        self.credentials = ExpiringCredentials(expires_at)

    async def get_credentials(self) -> ExpiringCredentials:
        return self.credentials


async def test_a_token_lives_no_longer_than_the_credentials_that_signed_it() -> None:
    # Given role credentials with 300 s left, and a route asking for 900 s tokens
    now = 1_800_000_000.0
    tokens = BedrockTokens(RoleSession(expires_at=now + 300), "us-west-2", 900)  # type: ignore[arg-type]
    # When a token is minted
    token, valid_s = await tokens.mint(now)
    # Then it is valid 300 s, and renewed at half of that
    query = urllib.parse.parse_qs(base64.b64decode(token.removeprefix("bedrock-api-key-")).decode().split("?", 1)[1])
    assert (query["X-Amz-Expires"], valid_s) == (["300"], 300.0)
