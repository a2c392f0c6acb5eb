"""Router policy and request parsing: table tests."""

from __future__ import annotations

import random

import pytest

from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.router.policy import (
    RETRY_AFTER_SECONDS,
    BackendState,
    PrefixHomes,
    Replica,
    RouteRequest,
    UnknownModel,
    choose_replica,
    decide,
    model_names,
    name_clashes,
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
        (RouteRequest("qwen3-big"), {"small": [0.0], "medium": [0.0]}, "medium", "alias>wake>fallback"),
        (RouteRequest("qwen3-big"), {"small": [0.0]}, "big", "alias>wake"),
    ],
)
def test_decide_backend(request_: RouteRequest, states: dict[str, list[float]], backend: str, reason: str) -> None:
    route = decide(request_, SPEC, _states(**states))
    assert (route.backend, route.reason) == (backend, reason)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel):
        decide(RouteRequest("gpt-4"), SPEC, _states(**ALL_UP))


# The whole decision for a request for `large` (fallback `medium`, spillover to `extra` above 2 waiting per replica):
# target ready / at zero / starting x fallback ready / at zero x spillover over / under x scaleFromZero on / off.
TABLE_SPEC = {
    "backends": [
        {"name": "large", "aliases": ["big"], "fallback": "medium", "spilloverTo": "extra",
         "spilloverQueuePerReplica": 2},
        {"name": "medium"},
        {"name": "extra"},
    ],
    "defaultBackend": "medium",
    "scaleFromZero": {"holdSeconds": 30},
}  # fmt: skip
SERVE, WAKE_FALLBACK, FALLBACK, HOLD, REFUSE = "serve", "wake+fallback", "fallback", "hold", "refuse"
SPILL = "spill"
ROWS = [
    # target, fallback, spillover, scaleFromZero, outcome
    ("ready", "ready", "over", True, SPILL), ("ready", "ready", "over", False, SPILL),
    ("ready", "ready", "under", True, SERVE), ("ready", "ready", "under", False, SERVE),
    ("ready", "zero", "over", True, SPILL), ("ready", "zero", "over", False, SPILL),
    ("ready", "zero", "under", True, SERVE), ("ready", "zero", "under", False, SERVE),
    ("zero", "ready", "over", True, WAKE_FALLBACK), ("zero", "ready", "over", False, FALLBACK),
    ("zero", "ready", "under", True, WAKE_FALLBACK), ("zero", "ready", "under", False, FALLBACK),
    ("zero", "zero", "over", True, HOLD), ("zero", "zero", "over", False, REFUSE),
    ("zero", "zero", "under", True, HOLD), ("zero", "zero", "under", False, REFUSE),
    ("starting", "ready", "over", True, WAKE_FALLBACK), ("starting", "ready", "over", False, FALLBACK),
    ("starting", "ready", "under", True, WAKE_FALLBACK), ("starting", "ready", "under", False, FALLBACK),
    ("starting", "zero", "over", True, HOLD), ("starting", "zero", "over", False, REFUSE),
    ("starting", "zero", "under", True, HOLD), ("starting", "zero", "under", False, REFUSE),
]  # fmt: skip
EXPECTED = {  # outcome -> (serving backend, reason, wake, hold, meanwhile, refusal status)
    SPILL: ("extra", "alias>spillover", False, False, None, None),
    SERVE: ("large", "alias", False, False, None, None),
    WAKE_FALLBACK: ("medium", "alias>wake>fallback", True, False, "medium", None),
    FALLBACK: ("medium", "alias>fallback", False, False, "medium", None),
    HOLD: ("large", "alias>wake", True, True, None, None),
    REFUSE: ("large", "alias", False, False, None, 503),
}


def _table_states(target: str, fallback: str, spillover: str) -> dict[str, BackendState]:
    queue = 5.0 if spillover == "over" else 1.0
    large = BackendState("large", "Qwen3-235B-A22B", desired=1 if target == "starting" else 0)
    if target == "ready":
        large.replicas, large.desired = [Replica("l-0", "a", waiting=queue), Replica("l-1", "b", waiting=queue)], 2
    medium = BackendState("medium", "Qwen3-30B-A3B", desired=int(fallback == "ready"))
    if fallback == "ready":
        medium.replicas = [Replica("m-0", "c")]
    extra = BackendState("extra", "Qwen3-8B", [Replica("e-0", "d")], desired=1)
    return {"large": large, "medium": medium, "extra": extra}


@pytest.mark.parametrize(("target", "fallback", "spillover", "scale_from_zero", "outcome"), ROWS)
def test_one_decision_over_every_combination(
    target: str, fallback: str, spillover: str, scale_from_zero: bool, outcome: str
) -> None:
    spec = Qwen3RouterSpec.model_validate({**TABLE_SPEC, "scaleFromZero": {"enabled": scale_from_zero}})
    route = decide(RouteRequest("big"), spec, _table_states(target, fallback, spillover))
    refusal = route.refusal.status if route.refusal else None
    got = (route.backend, route.reason, route.wake, route.hold, route.meanwhile, refusal)
    assert got == EXPECTED[outcome]
    assert route.target == "large"
    if refusal:
        assert "large" in route.refusal.message and "scale from zero is disabled" in route.refusal.message  # type: ignore[union-attr]


def test_the_table_covers_every_combination() -> None:
    combos = {row[:4] for row in ROWS}
    assert len(combos) == len(ROWS) == 3 * 2 * 2 * 2


def test_a_request_for_a_backend_at_zero_wakes_it_and_the_fallback_serves_until_it_is_ready() -> None:
    states = _table_states("zero", "ready", "under")
    spec = Qwen3RouterSpec.model_validate(TABLE_SPEC)
    meanwhile = decide(RouteRequest("big"), spec, states)
    assert (meanwhile.backend, meanwhile.wake, meanwhile.meanwhile) == ("medium", True, "medium")
    states["large"].desired = 1  # the operator scaled it up: starting
    assert decide(RouteRequest("big"), spec, states).backend == "medium"
    states["large"].replicas = [Replica("l-0", "a")]  # Ready
    ready = decide(RouteRequest("big"), spec, states)
    assert (ready.backend, ready.reason, ready.wake, ready.meanwhile) == ("large", "alias", False, None)


def test_held_requests_are_bounded_per_backend() -> None:
    spec = Qwen3RouterSpec.model_validate({**TABLE_SPEC, "scaleFromZero": {"maxHeldRequests": 2}})
    states = _table_states("zero", "zero", "under")
    states["large"].held = 1
    assert decide(RouteRequest("big"), spec, states).hold
    states["large"].held = 2
    full = decide(RouteRequest("big"), spec, states)
    assert not full.hold and full.wake and full.refusal is not None
    assert (full.refusal.status, full.refusal.retry_after) == (429, RETRY_AFTER_SECONDS)
    assert decide(RouteRequest("big"), spec, states, already_held=True).hold  # one of the held, asking again


@pytest.mark.parametrize(("fallback", "backend", "status"), [("ready", "medium", None), ("zero", "large", 503)])
def test_a_backend_whose_deployment_does_not_exist_is_answered_at_once(
    fallback: str, backend: str, status: int | None
) -> None:
    spec = Qwen3RouterSpec.model_validate(TABLE_SPEC)
    states = _table_states("zero", fallback, "under")
    states["large"].exists = False
    route = decide(RouteRequest("big"), spec, states)
    assert (route.backend, route.wake, route.hold) == (backend, False, False)
    assert (route.refusal.status if route.refusal else None) == status
    if route.refusal:
        assert "does not exist" in route.refusal.message
    other = decide(RouteRequest("extra"), spec, states)  # the other backends keep serving
    assert (other.backend, other.refusal) == ("extra", None)


def test_a_burst_between_scrapes_spills_on_in_flight_requests_beyond_capacity() -> None:
    spec = Qwen3RouterSpec.model_validate(TABLE_SPEC)
    states = _table_states("ready", "ready", "under")
    states["large"].replicas = [Replica("l-0", "a", waiting=0.0, capacity=4)]  # the last scrape saw an empty queue
    served = []
    for _ in range(10):
        route = decide(RouteRequest("big"), spec, states)
        served.append(route.backend)
        states[route.backend].replicas[0].outstanding += 1  # in flight until answered
    assert served == ["large"] * 7 + ["extra"] * 3  # 4 running + 2 queued per replica allowed, then spill
    unknown = _table_states("ready", "ready", "under")
    unknown["large"].replicas = [Replica("l-0", "a", outstanding=100)]  # no plan capacity: the scrape decides
    assert decide(RouteRequest("big"), spec, unknown).backend == "large"


def test_served_model_names_and_backend_names_are_never_taken_over_by_aliases() -> None:
    spec = Qwen3RouterSpec.model_validate(
        {"backends": [{"name": "a", "aliases": ["Qwen3-8B"]}, {"name": "b"}], "defaultBackend": "a"}
    )
    states = {"a": BackendState("a", "Qwen3-0.6B"), "b": BackendState("b", "Qwen3-8B")}
    assert model_names(spec, states)["Qwen3-8B"] == "b"
    assert name_clashes(spec, states) == ["alias 'Qwen3-8B' of a is the served model name of b"]
    states["b"].served_model = "Qwen3-14B"  # spec.model edited: the new name is live, the alias is free again
    names = model_names(spec, states)
    assert (names["Qwen3-8B"], names["Qwen3-14B"]) == ("a", "b") and not name_clashes(spec, states)


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
