"""Status computed once: conditions, the typed status, reasons and their documentation, replica counts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qwenfleet.api.status import Cond, ConditionType, Reason
from qwenfleet.planner import PlanRequest, plan
from qwenfleet.render.status import (
    DEPLOYMENT_STATUS_FIELDS,
    DeploymentView,
    PodState,
    RouterView,
    WorkloadCounts,
    deployment_status,
    ready_replicas,
    router_status,
    serving_ips,
    status_patch,
)

NOW = "2026-12-01T06:00:00Z"
PLAN = plan(PlanRequest(model="Qwen3-8B", gpu="L4-24GB"))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
T, R = ConditionType, Reason


def _view(**kw: Any) -> DeploymentView:
    base: dict[str, Any] = {
        "generation": 2,
        "plan": PLAN,
        "desired_replicas": 2,
        "workload": WorkloadCounts(replicas=2, ready=2, updated=2),
        "cache": Cond(T.MODEL_CACHED, True, R.CACHE_DISABLED, "each pod downloads the weights"),
        "nodepool": Cond(T.NODE_POOL_READY, True, R.EXISTING_NODES, ""),
        "selector": "a=b",
        "endpoint": "http://x",
    }
    return DeploymentView(**(base | kw))


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_a_ready_deployment_has_the_plan_counts_and_conditions() -> None:
    status, _ = deployment_status(_view(), {}, NOW)
    wire = status.to_wire()
    assert wire["plan"]["referenceConcurrency"] == PLAN.reference_concurrency  # type: ignore[index]
    assert wire["readySummary"] == "2/2" and wire["observedGeneration"] == 2
    conds = _conds(wire)
    assert conds["Ready"][:2] == ("True", "Available")
    assert conds["Progressing"][:2] == ("False", "RolloutComplete")
    assert conds["PlanFeasible"][:2] == ("True", "Planned")


def test_an_infeasible_edit_withdraws_the_old_plan_but_keeps_the_counts() -> None:
    before, _ = deployment_status(_view(), {}, NOW)
    previous = before.to_wire() | {"autoscaler": {"desiredReplicas": 2, "queuePerReplica": 1.0}}
    view = DeploymentView(generation=3, blocked=(R.PLAN_INFEASIBLE, "235B does not fit"))
    after, _ = deployment_status(view, previous, NOW)
    wire = after.to_wire()
    assert "plan" not in wire, "the autoscaler must not size on a plan that no longer holds"
    assert wire["readyReplicas"] == 2 and wire["autoscaler"]["desiredReplicas"] == 2  # type: ignore[index]
    conds = _conds(wire)
    assert conds["Ready"] == ("False", "PlanInfeasible", "235B does not fit")
    assert conds["PlanFeasible"][:2] == ("False", "PlanInfeasible")
    patch = status_patch(previous, wire, DEPLOYMENT_STATUS_FIELDS)
    assert patch is not None and patch["plan"] is None and "autoscaler" not in patch


def test_an_unchanged_status_is_not_patched() -> None:
    first, _ = deployment_status(_view(), {}, NOW)
    again, _ = deployment_status(_view(), first.to_wire(), "2030-01-01T00:00:00Z")
    assert status_patch(first.to_wire(), again.to_wire(), DEPLOYMENT_STATUS_FIELDS) is None


def test_a_refused_child_is_a_condition_with_the_api_servers_message() -> None:
    message = "PersistentVolumeClaim q-weights: spec.resources.requests.storage: Forbidden: can not be less than "
    message += "status.capacity"
    previous, _ = deployment_status(_view(), {}, NOW)
    status, _ = deployment_status(_view(generation=3, workload=None, apply_error=message), previous.to_wire(), NOW)
    conds = _conds(status.to_wire())
    assert conds["Ready"] == ("False", "ApplyFailed", message)
    assert conds["Degraded"] == ("True", "ApplyFailed", message)
    assert status.observed_generation == 3


def test_new_weights_filling_keep_the_old_replicas_serving() -> None:
    cache = Cond(T.MODEL_CACHED, False, R.DOWNLOADING, "job q-download-abc running")
    status, _ = deployment_status(_view(cache=cache, held_for_cache=True, cache_pvc="q-weights-abc"), {}, NOW)
    conds = _conds(status.to_wire())
    assert conds["Ready"][:2] == ("True", "Available")
    assert conds["Progressing"][:2] == ("True", "WaitingForModelCache")
    assert status.cache is not None and status.cache.pvc_name == "q-weights-abc" and status.cache.phase == "Downloading"
    first, _ = deployment_status(_view(cache=cache, workload=WorkloadCounts()), {}, NOW)
    assert _conds(first.to_wire())["Ready"][:2] == ("False", "WaitingForModelCache")


def test_every_reason_written_is_an_enum_member() -> None:
    views = [
        _view(),
        _view(desired_replicas=0, workload=WorkloadCounts()),
        _view(pods=[PodState("p", "Pending", False, unschedulable="Insufficient nvidia.com/gpu")]),
        _view(apply_error="x"),
        DeploymentView(generation=1, blocked=(R.SECRET_MISSING, "no")),
    ]
    for view in views:
        status, _ = deployment_status(view, {}, NOW)
        assert all(Reason(c.reason) for c in status.conditions)


def test_a_multi_node_replica_counts_once() -> None:
    group = [
        PodState("big-0", "Running", True, ip="127.1.0.1", role="leader"),
        PodState("big-0-1", "Running", True, ip="127.1.0.2", role="worker"),
        PodState("big-1", "Running", False, ip="127.1.0.3", role="leader"),
        PodState("big-1-1", "Running", True, ip="127.1.0.4", role="worker"),
    ]
    assert ready_replicas(group) == 1
    assert serving_ips(group) == ["127.1.0.1"]
    single = [PodState("a", "Running", True, ip="127.1.1.1"), PodState("b", "Running", True, ip="127.1.1.2")]
    assert ready_replicas(single) == 2


def test_router_names_missing_backends_and_keeps_serving() -> None:
    view = RouterView(generation=1, desired=1, replicas=1, ready=1, backends=[("small", 1), ("ghost", 0)],
                      missing=["ghost"])  # fmt: skip
    status, _ = router_status(view, {}, NOW)
    conds = _conds(status.to_wire())
    assert conds["Ready"][:2] == ("True", "Available") and "small" in conds["Ready"][2]
    assert conds["Degraded"][:2] == ("True", "BackendMissing") and "ghost" in conds["Degraded"][2]
    assert [(b.name, b.ready_replicas) for b in status.backends] == [("small", 1), ("ghost", 0)]
    healthy, _ = router_status(RouterView(generation=1, desired=1, ready=1, backends=[("small", 1)]), {}, NOW)
    assert _conds(healthy.to_wire())["Degraded"][:2] == ("False", "AsExpected")


def test_router_says_when_its_pools_cannot_be_rendered_and_lists_those_it_has() -> None:
    view = RouterView(generation=1, desired=1, ready=1, backends=[("small", 1)], pools_crd_missing=True)
    conds = _conds(router_status(view, {}, NOW)[0].to_wire())
    assert conds["Degraded"][:2] == ("True", "InferencePoolCRDMissing") and "not installed" in conds["Degraded"][2]
    assert conds["Ready"][0] == "True"  # the router and its picker serve regardless
    status, _ = router_status(RouterView(generation=1, desired=1, ready=1, pools=["chat-small"]), {}, NOW)
    assert status.to_wire()["inferencePools"] == ["chat-small"]


def _documented_reasons() -> set[str]:
    """Reasons in the reason column of the condition tables of docs/operations.md."""
    reasons: set[str] = set()
    in_table = False
    for line in DOCS.read_text().splitlines():
        if line.startswith("## "):
            in_table = "condition reasons" in line
        elif in_table and line.startswith("|") and not line.startswith("|---"):
            cells = line.split("|")
            reasons |= set(re.findall(r"`([A-Z][A-Za-z0-9]+)`", cells[2]))
    return reasons


def test_every_reason_is_documented_and_every_documented_reason_exists() -> None:
    documented = _documented_reasons()
    assert {r.value for r in Reason} - documented == set(), "reasons missing from docs/operations.md"
    assert documented - {r.value for r in Reason} == set(), "documented reasons the operator never writes"


def test_a_router_child_the_api_server_refuses_is_a_condition() -> None:
    previous, _ = router_status(RouterView(generation=1, desired=1, replicas=1, ready=1), {}, NOW)
    view = RouterView(generation=2, apply_error="Service front: spec.type: Unsupported value")
    status, _ = router_status(view, previous.to_wire(), NOW)
    conds = _conds(status.to_wire())
    assert conds["Ready"] == ("False", "ApplyFailed", "Service front: spec.type: Unsupported value")
    assert conds["Degraded"][:2] == ("True", "ApplyFailed") and status.ready_replicas == 1


def test_one_reading_of_a_pod_a_terminating_pod_is_not_ready_for_anyone() -> None:
    from qwenfleet.render.status import pod_state, ready_replicas, serving_ips

    conditions = [{"type": "Ready", "status": "True"}]
    ready = {"metadata": {"name": "p", "labels": {}}, "spec": {"nodeName": "n1"},
             "status": {"phase": "Running", "podIP": "127.1.0.9", "conditions": conditions}}  # fmt: skip
    draining = {**ready, "metadata": {**ready["metadata"], "deletionTimestamp": "2026-12-07T00:00:00Z"}}
    worker = {**ready, "metadata": {"name": "w", "labels": {"qwenfleet.dev/role": "worker"}}}
    states = [pod_state(p) for p in (ready, draining, worker)]
    assert [s.ready_to_serve for s in states] == [True, False, False]
    assert states[1].terminating and not states[1].ready and states[0].node == "n1"
    assert ready_replicas(states) == 1 and serving_ips(states) == ["127.1.0.9"]


def test_router_says_when_todays_external_budget_is_spent() -> None:
    view = RouterView(generation=1, desired=1, ready=1, backends=[("small", 1)], budget_exhausted=50.0)
    conds = _conds(router_status(view, {}, NOW)[0].to_wire())
    assert conds["Degraded"][:2] == ("True", "ExternalBudgetExhausted") and "50 USD" in conds["Degraded"][2]
