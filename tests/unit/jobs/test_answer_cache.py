"""The answer cache as a stage of a unit's run, over in-memory ports: kept answers recorded without a call,
identical lines sent once, failures shared, a cache that fails never failing the run."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from promptdrop.engine.request import Endpoint, Request
from promptdrop.jobs import JobRunner
from promptdrop.jobs.answer_cache import CachePolicy, cache_key
from promptdrop.records import CachedAnswer

from tests.unit.jobs.conftest import World, lines

ROUTE = "https://api.example/v1"


class MemoryAnswerCache:
    """Answers kept by key, as the DynamoDB adapter keeps them; ``broken``: every call raises."""

    def __init__(self) -> None:
        self.kept: dict[str, CachedAnswer] = {}
        self.lookups = 0
        self.broken = False

    async def get_many(self, keys: Sequence[str]) -> dict[str, CachedAnswer]:
        self.lookups += 1
        if self.broken:
            raise ConnectionError("the table is unreachable")
        return {key: self.kept[key] for key in keys if key in self.kept}

    async def put_many(self, answers: Sequence[CachedAnswer], now: str) -> None:
        if self.broken:
            raise ConnectionError("the table is unreachable")
        self.kept |= {answer.key: answer for answer in answers}


def runner(world: World, cache: MemoryAnswerCache, **env: object) -> JobRunner:
    return world.runner(cache=cache, route=ROUTE, **env)


def request(body: dict[str, object], endpoint: Endpoint = Endpoint.CHAT) -> Request:
    return Request(1, "a", json.dumps(body).encode(), 1, endpoint=endpoint)


def test_the_key_is_the_route_the_endpoint_and_the_canonical_body() -> None:
    one = request({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    same = request({"messages": [{"content": "hi", "role": "user"}], "temperature": 0.0, "model": "m"})
    assert cache_key(ROUTE, one, CachePolicy.DETERMINISTIC) == cache_key(ROUTE, same, CachePolicy.DETERMINISTIC)
    assert cache_key(ROUTE, one, CachePolicy.ALL) != cache_key("https://other/v1", one, CachePolicy.ALL)
    as_response = request(json.loads(one.body), Endpoint.RESPONSES)
    assert cache_key(ROUTE, one, CachePolicy.ALL) != cache_key(ROUTE, as_response, CachePolicy.ALL)


@pytest.mark.parametrize(
    ("body", "endpoint", "policy", "cached"),
    [
        ({"model": "m", "messages": [], "temperature": 0}, Endpoint.CHAT, CachePolicy.DETERMINISTIC, True),
        ({"model": "m", "messages": []}, Endpoint.CHAT, CachePolicy.DETERMINISTIC, False),  # sampled
        ({"model": "m", "messages": [], "temperature": 0.7}, Endpoint.CHAT, CachePolicy.DETERMINISTIC, False),
        ({"model": "m", "messages": [], "temperature": False}, Endpoint.CHAT, CachePolicy.DETERMINISTIC, False),
        ({"model": "e", "input": "x"}, Endpoint.EMBEDDINGS, CachePolicy.DETERMINISTIC, True),
        ({"model": "o", "input": "x"}, Endpoint.MODERATIONS, CachePolicy.DETERMINISTIC, True),
        ({"model": "m", "messages": []}, Endpoint.CHAT, CachePolicy.ALL, True),
        ({"model": "m", "messages": [], "temperature": 0}, Endpoint.CHAT, CachePolicy.OFF, False),
    ],
)
def test_which_requests_the_policy_caches(
    body: dict[str, object], endpoint: Endpoint, policy: CachePolicy, cached: bool
) -> None:
    assert (cache_key(ROUTE, request(body, endpoint), policy) is not None) is cached


async def test_a_second_job_of_the_same_lines_sends_nothing(world: World) -> None:
    cache = MemoryAnswerCache()
    await world.upload("in/a.jsonl", lines("one", "two", temperature=0), runner(world, cache))
    assert world.api.prompts == ["one", "two"]
    assert len(cache.kept) == 2

    result = await world.upload("in/b.jsonl", lines("one", "two", temperature=0), runner(world, cache))

    assert world.api.prompts == ["one", "two"]  # nothing more sent
    assert world.job(result).status == "SUCCEEDED"
    assert world.summary("in/b.jsonl")["cached"] == 2
    out = world.outputs("in/b.jsonl", ".out.jsonl")
    assert [line["response"]["body"]["choices"][0]["message"]["content"] for line in out] == ["eno", "owt"]


async def test_identical_lines_wait_for_the_first_and_share_its_failure(world: World) -> None:
    from promptdrop.engine.errors import MalformedResponse

    cache = MemoryAnswerCache()
    world.api.fail_on["bad"] = MalformedResponse("not the endpoint's answer", 200)
    await world.upload("in/c.jsonl", lines("same", "same", "bad", "bad", "same", temperature=0), runner(world, cache))
    assert sorted(world.api.prompts) == ["bad", "bad", "same"]  # "bad" tried twice (max_attempts), once for both lines
    summary = world.summary("in/c.jsonl")
    assert (summary["counts"]["succeeded"], summary["counts"]["failed"], summary["cached"]) == (3, 2, 2)
    letters = [letter for letter in world.dead_letters() if getattr(letter, "line", None)]
    assert sorted(letter.line for letter in letters) == [3, 4]  # each failed line has its own dead letter
    assert "bad" not in {
        json.loads(answer.response)["choices"][0]["message"]["content"] for answer in cache.kept.values()
    }


async def test_a_cache_that_fails_never_fails_the_run(world: World) -> None:
    cache = MemoryAnswerCache()
    cache.broken = True
    result = await world.upload("in/d.jsonl", lines("one", "two", temperature=0), runner(world, cache))
    assert world.job(result).status == "SUCCEEDED"
    assert world.api.prompts == ["one", "two"]
    assert world.summary("in/d.jsonl")["cached"] == 0


async def test_an_unknown_policy_fails_the_file_before_anything_is_sent(world: World) -> None:
    cache = MemoryAnswerCache()
    result = await world.upload("in/e.jsonl", lines("one"), runner(world, cache), **{"promptdrop-cache": "forever"})
    assert world.job(result).status == "FAILED"
    (failure,) = world.file_failures()
    assert failure.error["code"] == "invalid_cache"
    assert world.api.prompts == []
