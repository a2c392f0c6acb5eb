"""Router policy and request parsing: table tests."""

from __future__ import annotations

import random

import pytest

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.policy import (
    BackendState,
    PrefixHomes,
    Replica,
    RouteRequest,
    UnknownModel,
    choose_backend,
    choose_replica,
    prefix_key,
)
from qwenfleet.router.requests import BadRequest, route_request

SPEC = Qwen3RouterSpec.model_validate(
    {
        "backends": [
            {"name": "small", "aliases": ["qwen3-small"], "spilloverTo": "medium", "spilloverQueuePerReplica": 4,
             "fallback": "medium"},
            {"name": "medium", "aliases": ["qwen3-medium"]},
            {"name": "big", "aliases": ["qwen3-big"], "fallback": "medium"},
        ],
        "defaultBackend": "small",
        "rules": [
            {"name": "premium", "match": {"tier": "premium"}, "backend": "big"},
            {"name": "thinking", "match": {"thinking": True}, "backend": "big"},
            {"name": "long", "match": {"minPromptTokens": 8000}, "backend": "medium"},
            {"name": "tools", "match": {"tools": True, "minMaxTokens": 1000}, "backend": "medium"},
        ],
    }
)  # fmt: skip


def _states(**waiting: list[float]) -> dict[str, BackendState]:
    states = {name: BackendState(name, served_model=f"Qwen3-{name}") for name in ("small", "medium", "big")}
    for name, queues in waiting.items():
        states[name].replicas = [Replica(f"{name}-{i}", f"127.1.0.{i}:8000", waiting=w) for i, w in enumerate(queues)]
    return states


ALL_UP = {"small": [0.0], "medium": [0.0], "big": [0.0]}


@pytest.mark.parametrize(
    ("request_", "states", "backend", "reason"),
    [
        (RouteRequest("qwen3-big"), ALL_UP, "big", "alias"),
        (RouteRequest("Qwen3-medium"), ALL_UP, "medium", "alias"),
        (RouteRequest("auto"), ALL_UP, "small", "default"),
        (RouteRequest("auto", thinking=True), ALL_UP, "big", "rule:thinking"),
        (RouteRequest("auto", tier="premium"), ALL_UP, "big", "rule:premium"),
        (RouteRequest("auto", prompt_tokens=9000), ALL_UP, "medium", "rule:long"),
        (RouteRequest("auto", tools=True, max_tokens=2000), ALL_UP, "medium", "rule:tools"),
        (RouteRequest("auto", tools=True, max_tokens=10), ALL_UP, "small", "default"),
        (RouteRequest("auto"), {"small": [9.0, 7.0], "medium": [1.0], "big": [0.0]}, "medium", "default>spillover"),
        (RouteRequest("auto"), {"small": [9.0], "medium": [9.0], "big": [0.0]}, "small", "default"),
        (RouteRequest("qwen3-big"), {"small": [0.0], "medium": [0.0]}, "medium", "alias>fallback"),
        (RouteRequest("qwen3-big"), {"small": [0.0]}, "big", "alias"),
    ],
)
def test_choose_backend(request_: RouteRequest, states: dict[str, list[float]], backend: str, reason: str) -> None:
    route = choose_backend(request_, SPEC, _states(**states))
    assert (route.backend, route.reason) == (backend, reason)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel):
        choose_backend(RouteRequest("gpt-4"), SPEC, _states(**ALL_UP))


def test_power_of_two_prefers_the_less_loaded_replica() -> None:
    state = BackendState("small", replicas=[Replica("a", "x", outstanding=10), Replica("b", "y", outstanding=0)])
    picks = {choose_replica(state, random.Random(i)).id for i in range(20)}  # type: ignore[union-attr]
    assert picks == {"b"}
    assert choose_replica(state, random.Random(0), exclude=frozenset({"b"})).id == "a"  # type: ignore[union-attr]
    assert choose_replica(BackendState("none"), random.Random(0)) is None


def test_prefix_affinity_is_sticky_but_bounded() -> None:
    replicas = [Replica(f"r{i}", "x") for i in range(4)]
    state = BackendState("small", replicas=replicas)
    table = PrefixHomes()

    def pick(seed: int, prefix: str = "system prompt A") -> Replica:
        chosen = choose_replica(state, random.Random(seed), prefix=prefix, prefix_chars=64, homes=table)
        assert chosen is not None
        return chosen

    homes = {pick(i).id for i in range(10)}
    assert len(homes) == 1
    home = next(r for r in replicas if r.id in homes)
    home.outstanding = 50
    moved = pick(1)
    assert moved.id != home.id
    assert set(table.get(prefix_key("system prompt A", 64))) == {home.id, moved.id}
    home.outstanding = 0
    assert pick(2).id in {home.id, moved.id}  # a second holder now; either has the prefix cached


def test_prefix_affinity_keys_on_the_leading_characters_only() -> None:
    state = BackendState("small", replicas=[Replica(f"r{i}", "x") for i in range(4)])
    table = PrefixHomes()
    first = choose_replica(state, random.Random(0), prefix="P" * 64 + "question 1", prefix_chars=64, homes=table)
    again = choose_replica(state, random.Random(9), prefix="P" * 64 + "question 2", prefix_chars=64, homes=table)
    assert first is not None and again is not None and first.id == again.id


def test_prefix_homes_are_bounded() -> None:
    table = PrefixHomes(max_prefixes=3, max_homes=2)
    for key in range(5):
        for replica in ("a", "b", "c"):
            table.record(key, replica)
    assert len(table) == 3 and table.get(0) == [] and table.get(4) == ["b", "c"]


@pytest.mark.parametrize(
    ("body", "chat", "expected"),
    [
        ({"model": "auto", "messages": [{"role": "user", "content": "hi /think"}]}, True, {"thinking": True}),
        ({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
          "chat_template_kwargs": {"enable_thinking": True}}, True, {"thinking": True}),
        ({"model": "auto", "messages": [{"role": "user", "content": "x /no_think"}]}, True, {"thinking": False}),
        ({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 400}]}]}, True,
         {"prompt_tokens": 100}),
        ({"model": "m", "prompt": "abcd", "max_tokens": 7}, False, {"prompt_tokens": 1, "max_tokens": 7}),
        ({"model": "m", "messages": [], "tools": [{"type": "function"}]}, True, {"tools": True}),
    ],
)  # fmt: skip
def test_route_request(body: dict[str, object], chat: bool, expected: dict[str, object]) -> None:
    parsed = route_request(body, {"x-qwenfleet-tier": "gold"}, chat=chat)
    assert parsed.tier == "gold"
    for key, value in expected.items():
        assert getattr(parsed, key) == value


@pytest.mark.parametrize(
    "body",
    [[], {"messages": []}, {"model": "m", "messages": "hi"}, {"model": "m", "messages": [], "max_tokens": -1},
     {"model": "m", "messages": [], "chat_template_kwargs": "x"}, {"model": "m", "messages": [1]}],
)  # fmt: skip
def test_bad_bodies(body: object) -> None:
    with pytest.raises(BadRequest):
        route_request(body, {}, chat=True)
