"""LoRA adapters: the spec's rules, the planner's slots and memory, the rendered pods, the live sync's decisions
and the router's choice of replica."""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from qwenfleet.adapters import (
    ReplicaResult,
    actions,
    adapter_statuses,
    adapters_condition,
    load_error_message,
    loaded_adapters,
    summary,
    wanted_adapters,
)
from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.api.router import Qwen3RouterSpec
from qwenfleet.cost.loop import parse_router
from qwenfleet.cost.routing import BackendPrice, report
from qwenfleet.planner import LoraSlots, PlanRequest, plan, plan_request
from qwenfleet.render import Capabilities, DeploymentInput, Owner, desired_children
from qwenfleet.router.app import RouterMetrics
from qwenfleet.router.policy import (
    BackendState,
    Replica,
    RouteRequest,
    UnknownModel,
    choose_replica,
    decide,
    model_names,
    upstream_model,
)
from qwenfleet.router.usage import Usage


def _spec(**extra: Any) -> Qwen3DeploymentSpec:
    return Qwen3DeploymentSpec.model_validate({"model": "Qwen3-8B", "gpu": "L4-24GB", **extra})


def _pvc(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "pvc": {"claimName": "tuned", "path": f"/{name}"}, **extra}


# ------------------------------------------------------------------------------------------------ spec


@pytest.mark.parametrize(
    ("adapters", "extra", "message"),
    [
        ([_pvc("a"), _pvc("a")], {}, "unique"),
        ([_pvc("a", rank=32)], {}, "maxRank"),
        ([{"name": "a", "huggingFace": {"repo": "me/a"}}], {}, "cache.mode pvc"),
        ([{"name": "a"}], {}, "exactly one source"),
        ([_pvc("qwen3-8b")], {}, "base model"),
        ([_pvc("Bad Name")], {}, "pattern"),
    ],
)
def test_bad_adapters_are_refused_with_the_reason(adapters: list[Any], extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(adapters=adapters, **extra)


def test_a_rank_within_a_raised_max_rank_is_accepted() -> None:
    spec = _spec(adapters=[_pvc("a", rank=32)], lora={"maxRank": 32})
    assert spec.lora_limits.max_rank == 32 and spec.serves_adapters


def test_adapter_folders_on_the_pods() -> None:
    hub = {"name": "b", "huggingFace": {"repo": "me/b", "revision": "abc"}}
    spec = _spec(cache={"mode": "pvc"}, adapters=[_pvc("a"), hub])
    assert wanted_adapters(spec.adapters) == {"a": "/adapters/tuned/a", "b": "/models/adapters/me/b/abc"}


# ------------------------------------------------------------------------------------------------ planner


def test_lora_slots_take_memory_from_the_kv_cache_and_render_the_flags() -> None:
    without = plan(PlanRequest(model="Qwen3-8B", gpu="L4-24GB"))
    small = plan(PlanRequest(model="Qwen3-8B", gpu="L4-24GB", lora=LoraSlots(2, 8)))
    large = plan(PlanRequest(model="Qwen3-8B", gpu="L4-24GB", lora=LoraSlots(8, 64)))
    assert without.kv_cache_tokens > small.kv_cache_tokens > large.kv_cache_tokens
    assert small.lora_bytes_per_gpu is not None and large.lora_bytes_per_gpu == 32 * small.lora_bytes_per_gpu
    assert "--enable-lora" not in without.vllm_args and without.lora_bytes_per_gpu is None
    args = large.vllm_args
    assert args[args.index("--max-loras") + 1] == "8" and args[args.index("--max-lora-rank") + 1] == "64"
    assert any("LoRA: 8 adapter slots of rank 64" in n for n in large.notes)


def test_the_flags_follow_spec_lora_not_the_adapter_list() -> None:
    """Adding an adapter must not change the pods' arguments (that would roll every replica)."""
    one = plan(plan_request(_spec(lora={"maxRank": 16}, adapters=[_pvc("a")])))
    two = plan(plan_request(_spec(lora={"maxRank": 16}, adapters=[_pvc("a"), _pvc("b")])))
    assert one.vllm_args == two.vllm_args and one.max_loras == 4 and one.max_lora_rank == 16


def _children(spec: Qwen3DeploymentSpec) -> list[dict[str, Any]]:
    inp = DeploymentInput(owner=Owner(name="d", namespace="n", uid="u"), spec=spec, plan=plan(plan_request(spec)),
                          replicas=1, cache_ready=True, capabilities=Capabilities())  # fmt: skip
    return desired_children(inp)


def test_pods_mount_adapter_claims_read_only_and_switch_runtime_loading_on() -> None:
    pod = _children(_spec(adapters=[_pvc("a"), _pvc("b")]))[-1]["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if v["name"].startswith("adapters-")]
    assert volumes == [{"name": "adapters-tuned", "persistentVolumeClaim": {"claimName": "tuned", "readOnly": True}}]
    container = pod["containers"][0]
    assert {"name": "adapters-tuned", "mountPath": "/adapters/tuned", "readOnly": True} in container["volumeMounts"]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]
    plain = _children(_spec())[-1]["spec"]["template"]["spec"]["containers"][0]
    assert all(e["name"] != "VLLM_ALLOW_RUNTIME_LORA_UPDATING" for e in plain["env"])


def test_hugging_face_adapters_are_fetched_once_into_the_cache_at_their_revision() -> None:
    spec = _spec(cache={"mode": "pvc"}, adapters=[{"name": "b", "huggingFace": {"repo": "me/b", "revision": "abc"}}])
    jobs = [c for c in _children(spec) if c["kind"] == "Job"]
    assert len(jobs) == 2  # the checkpoint's and the adapter's
    script = jobs[1]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "hf download me/b --revision abc --local-dir /models/adapters/me/b/abc" in script


# ------------------------------------------------------------------------------------------------ live sync


def test_a_replica_loads_what_it_lacks_unloads_what_went_and_reloads_what_moved() -> None:
    todo = actions({"a": "/x/a", "b": "/x/b", "c": "/x/c2"}, {"b": "/x/b", "c": "/x/c", "old": "/x/old"})
    assert todo.unload == ("c", "old") and todo.load == (("a", "/x/a"), ("c", "/x/c2"))
    assert actions({"a": "/x/a"}, {"a": "/x/a"}) == actions({}, {})


def test_loaded_adapters_are_the_model_entries_with_a_parent() -> None:
    body = {"data": [{"id": "Qwen3-0.6B", "root": "/m", "parent": None}, {"id": "a1", "root": "/x/a1",
                                                                           "parent": "Qwen3-0.6B"}]}  # fmt: skip
    assert loaded_adapters(body) == {"a1": "/x/a1"} and loaded_adapters("nonsense") == {}


def test_status_counts_replicas_and_a_failed_load_is_a_condition_with_vllms_words() -> None:
    spec = _spec(adapters=[_pvc("a"), _pvc("b")])
    error = load_error_message(500, '{"error": {"message": "LoRA rank 32 is greater than max_lora_rank 16."}}')
    results = [ReplicaResult(loaded={"a", "b"}), ReplicaResult(loaded={"a"}, errors={"b": error})]
    statuses = adapter_statuses(spec.adapters, results)
    assert [(s.name, s.loaded_replicas, s.replicas) for s in statuses] == [("a", 2, 2), ("b", 1, 2)]
    assert summary(statuses) == "1/2"
    cond = adapters_condition(statuses)
    assert (cond.status, cond.reason) == (False, "AdapterLoadFailed")
    assert cond.message == "b: HTTP 500: LoRA rank 32 is greater than max_lora_rank 16."
    loading = adapters_condition(adapter_statuses(spec.adapters, [ReplicaResult(loaded={"a"})]))
    assert (loading.status, loading.reason) == (None, "AdaptersLoading") and "b" in loading.message
    done = adapters_condition(adapter_statuses(spec.adapters, [ReplicaResult(loaded={"a", "b"})]))
    assert done.status is True
    assert load_error_message(404, "not json") == "HTTP 404: not json"


# ------------------------------------------------------------------------------------------------ routing


ROUTER = Qwen3RouterSpec.model_validate(
    {"backends": [{"name": "tuned", "fallback": "small"}, {"name": "small"}], "defaultBackend": "tuned"}
)


def _states(*replicas: Replica, desired: int = 1) -> dict[str, BackendState]:
    return {
        "tuned": BackendState("tuned", "Qwen3-8B", list(replicas), desired=desired, adapters=("support", "legal")),
        "small": BackendState("small", "Qwen3-0.6B", [Replica("s", "127.0.0.9:8000")], desired=1),
    }


def test_an_adapter_name_reaches_its_backend_and_only_replicas_that_have_it() -> None:
    with_it = Replica("p1", "127.0.0.1:8000", adapters=frozenset({"support"}), served_model="Qwen3-8B")
    without = Replica("p2", "127.0.0.2:8000", served_model="Qwen3-8B")
    states = _states(with_it, without)
    assert model_names(ROUTER, states)["support"] == "tuned"
    route = decide(RouteRequest(model="support"), ROUTER, states)
    assert (route.backend, route.adapter, route.reason) == ("tuned", "support", "alias>adapter")
    picks = [choose_replica(states["tuned"], random.Random(i), adapter=route.adapter) for i in range(20)]
    assert all(p is with_it for p in picks)
    assert upstream_model(route, with_it, states["tuned"], "support") == "support"  # never rewritten to the base
    base = decide(RouteRequest(model="Qwen3-8B"), ROUTER, states)
    assert base.adapter is None and upstream_model(base, without, states["tuned"], "Qwen3-8B") == "Qwen3-8B"


def test_an_adapter_loaded_nowhere_yet_is_a_503_and_never_another_size() -> None:
    states = _states(Replica("p2", "127.0.0.2:8000"))
    route = decide(RouteRequest(model="legal"), ROUTER, states)
    assert route.refusal is not None and route.refusal.status == 503 and "legal" in route.refusal.message
    starting = decide(RouteRequest(model="legal"), ROUTER, _states(desired=1))
    assert starting.backend == "tuned" and starting.meanwhile is None  # no fallback to a model without it


def test_a_rule_can_send_auto_requests_to_an_adapter() -> None:
    spec = Qwen3RouterSpec.model_validate({
        "backends": [{"name": "tuned"}, {"name": "small"}], "defaultBackend": "small",
        "rules": [{"name": "sql", "match": {"tier": "sql"}, "backend": "tuned", "adapter": "legal"},
                  {"name": "ghost", "match": {"tier": "ghost"}, "backend": "tuned", "adapter": "nope"}],
    })  # fmt: skip
    with_it = Replica("p1", "127.0.0.1:8000", adapters=frozenset({"legal"}), served_model="Qwen3-8B")
    states = _states(with_it)
    route = decide(RouteRequest(model="auto", tier="sql"), spec, states)
    assert (route.backend, route.adapter, route.reason) == ("tuned", "legal", "rule:sql>adapter")
    assert upstream_model(route, with_it, states["tuned"], "auto") == "legal"
    assert decide(RouteRequest(model="auto"), spec, states).adapter is None
    ghost = decide(RouteRequest(model="auto", tier="ghost"), spec, states)
    assert ghost.refusal is not None and "not in spec.adapters" in ghost.refusal.message


def test_an_unknown_adapter_is_an_unknown_model() -> None:
    with pytest.raises(UnknownModel):
        decide(RouteRequest(model="nope"), ROUTER, _states(Replica("p", "127.0.0.1:8000")))


# ------------------------------------------------------------------------------------------------ cost


def test_each_adapter_gets_its_tokens_and_its_share_of_its_backends_cost() -> None:
    metrics = RouterMetrics()
    metrics.count_usage("tuned", Usage(prompt=100, output=300, reasoning=0), "support")
    metrics.count_usage("tuned", Usage(prompt=50, output=100, reasoning=0))
    totals = parse_router(generate_latest(metrics.registry).decode()).tokens
    prices = {"tuned": BackendPrice(2.0, 1, 0.8, 1000.0, 10000.0)}
    cost = report(totals, prices, None)
    (backend,) = cost.backends
    assert (backend.prompt_tokens, backend.output_tokens) == (150, 400)  # the adapter's tokens are the backend's
    (adapter,) = cost.adapters or []
    assert (adapter.adapter, adapter.prompt_tokens, adapter.output_tokens) == ("support", 100, 300)
    assert adapter.usd == round(300 / 1e6 * 2.0, 4) and adapter.backend_share == 0.75
