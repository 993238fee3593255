"""The routing table: a model's route, its limits and the name of its shared limits; and its validation."""

from __future__ import annotations

import pytest
from promptdrop.routes import DEFAULT_ROUTE, AuthKind, Route, RouteTable, bedrock_region
from promptdrop.settings import ConfigurationError, get_settings
from pydantic import ValidationError

BEDROCK_URL = "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1"


def table() -> RouteTable:
    return RouteTable(
        (
            Route(name="bedrock", models=("openai.gpt-oss-*",), base_url=BEDROCK_URL, auth=AuthKind.BEDROCK),
            Route(name="local", models=("Qwen/*", "llama-*"), base_url="http://127.0.0.1:8000/v1", auth=AuthKind.NONE),
            Route(name="openai", models=("*",)),
        )
    )


def test_a_model_goes_to_the_first_route_whose_glob_matches_it() -> None:
    routes = table()
    assert routes.route_for("openai.gpt-oss-120b-1:0").name == "bedrock"  # type: ignore[union-attr]
    assert routes.route_for("Qwen/Qwen3-8B").name == "local"  # type: ignore[union-attr]
    assert routes.route_for("gpt-4o-mini").name == "openai"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("base_url", "auth"),
    [
        ("http://127.0.0.1:8000/v1", "secret"),  # loopback: a gateway beside the function
        ("http://localhost/v1", "bedrock"),
        ("http://vllm.internal:8000/v1", "none"),  # no credential to leak
        ("https://x.openai.azure.com/openai/v1", "api-key"),
    ],
)
def test_plain_http_only_where_no_key_crosses_a_network(base_url: str, auth: str) -> None:
    assert Route(name="r", base_url=base_url, auth=auth).base_url == base_url  # type: ignore[arg-type]


def test_a_model_no_route_serves_has_none() -> None:
    routes = RouteTable((Route(name="local", models=("llama-*",), base_url="http://127.0.0.1/v1", auth="none"),))
    assert routes.route_for("gpt-4o-mini") is None
    assert routes.route_for("llama-3") is not None


def test_the_default_table_is_one_route_for_every_model_with_todays_limit_items() -> None:
    routes = RouteTable()
    assert [r.name for r in routes.routes] == [DEFAULT_ROUTE]
    assert routes.route_for("anything") is routes.routes[0]
    assert (routes.routes[0].auth, routes.routes[0].base_url) == (AuthKind.SECRET, None)
    # today's BUDGET#<model>: the fleet's items of a deployment that sets nothing keep their names
    assert routes.limit_key("gpt-4o-mini") == "gpt-4o-mini"


def test_a_configured_tables_limits_are_kept_per_route_and_model() -> None:
    assert table().limit_key("gpt-4o-mini") == "openai/gpt-4o-mini"
    assert table().limit_key("llama-3") == "local/llama-3"


def test_a_bedrock_routes_region_is_its_own_or_its_urls() -> None:
    assert bedrock_region(Route(name="b", base_url=BEDROCK_URL, auth="bedrock")) == "us-west-2"
    assert bedrock_region(Route(name="b", base_url=BEDROCK_URL, auth="bedrock", region="eu-west-1")) == "eu-west-1"
    assert bedrock_region(Route(name="b", base_url="https://gateway.example/v1", auth="bedrock")) is None


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"name": "b", "auth": "bedrock"}, "auth 'bedrock' needs a base_url"),
        ({"name": "a", "auth": "api-key"}, "auth 'api-key' needs a base_url"),
        ({"name": "x", "base_url": "ftp://host/v1"}, r"must be an http\(s\) URL"),
        ({"name": "x", "headers": {"Authorization": "Bearer sk-1"}}, "credentials go in 'auth'"),
        ({"name": "x", "base_url": "http://api.example/v1"}, "would cross the network in clear text"),
        ({"name": "x", "base_url": "http://localhost.attacker.example/v1"}, "in clear text"),
        ({"name": "x", "auth": "oauth"}, "Input should be 'secret', 'api-key', 'bedrock' or 'none'"),
        ({"name": "bad name"}, "String should match pattern"),
        ({"name": "x", "modes": ["flex", "overnight"]}, "Input should be 'flex' or 'batch'"),
        ({"name": "x", "rpm": 0}, "greater than or equal to 1"),
        ({"name": "x", "region_name": "us-east-1"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_route_is_refused_saying_why(route: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Route.model_validate(route)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("PROMPTDROP_TABLE", "jobs")
    monkeypatch.setenv("PROMPTDROP_DLQ_URL", "https://sqs.example/dlq")
    get_settings.cache_clear()
    return monkeypatch


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_table_setting_is_the_default_table(environment: pytest.MonkeyPatch, value: str) -> None:
    # CloudFormation passes "" for a parameter left empty
    environment.setenv("PROMPTDROP_ROUTES", value)
    assert get_settings().routes == ()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('[{"name": "a"', 'PROMPTDROP_ROUTES=\'[{"name": "a"\': not JSON'),
        ('[{"name": "a"}, {"name": "a"}]', "route names must be unique"),
        ('[{"name": "b", "auth": "bedrock"}]', "PROMPTDROP_ROUTES="),
        ('[{"name": "az", "auth": "api-key", "base_url": "https://x.example/v1"}]', "needs its key's secret"),
    ],
)
def test_a_bad_table_names_the_variable(environment: pytest.MonkeyPatch, value: str, message: str) -> None:
    environment.setenv("PROMPTDROP_ROUTES", value)
    with pytest.raises(ConfigurationError, match="PROMPTDROP_ROUTES") as info:
        get_settings()
    assert message in str(info.value)
    get_settings.cache_clear()


def test_the_table_is_read_from_json(environment: pytest.MonkeyPatch) -> None:
    environment.setenv(
        "PROMPTDROP_ROUTES",
        '[{"name": "bedrock", "models": ["openai.gpt-oss-*"], "base_url": "' + BEDROCK_URL + '", "auth": "bedrock",'
        ' "rpm": 100}, {"name": "openai"}]',
    )
    routes = get_settings().routes
    assert [(r.name, r.auth, r.rpm) for r in routes] == [("bedrock", AuthKind.BEDROCK, 100), ("openai", "secret", None)]
    get_settings.cache_clear()


def test_the_readmes_example_table_is_valid_and_routes_as_it_says() -> None:
    from pathlib import Path

    from promptdrop.settings import Settings

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("**Example: OpenAI, Amazon Bedrock and a local vLLM server.**", 1)[1]
    table_json = example.split("```json\n", 1)[1].split("```", 1)[0]
    routes = RouteTable(Settings(table="t", dlq_url="d", routes=table_json).routes)  # type: ignore[arg-type]
    assert routes.route_for("openai.gpt-oss-120b-1:0").name == "bedrock"  # type: ignore[union-attr]
    assert bedrock_region(routes.routes[0]) == "us-west-2"
    assert routes.route_for("Qwen/Qwen3-8B").name == "vllm"  # type: ignore[union-attr]
    assert routes.route_for("gpt-4o-mini").name == "openai"  # type: ignore[union-attr]
