"""Condition types and reasons of both kinds, and the pure merge of conditions into a status.

Every reason qwenfleet writes is a member of `Reason`; docs/operations.md documents each one (a unit test
checks both directions).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Obj = dict[str, Any]


class ConditionType(StrEnum):
    """The condition types qwenfleet writes."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    MODEL_CACHED = "ModelCached"
    NODE_POOL_READY = "NodePoolReady"
    PLAN_FEASIBLE = "PlanFeasible"
    ADAPTERS_LOADED = "AdaptersLoaded"


class Reason(StrEnum):
    """Machine-readable reasons of the conditions (CamelCase, as Kubernetes conventions want)."""

    # Ready, Progressing, Degraded
    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    AS_EXPECTED = "AsExpected"
    UNSCHEDULABLE = "Unschedulable"
    WAITING_FOR_MODEL_CACHE = "WaitingForModelCache"
    APPLY_FAILED = "ApplyFailed"
    # blocked before anything is applied
    PLAN_INFEASIBLE = "PlanInfeasible"
    INVALID_SPEC = "InvalidSpec"
    SECRET_MISSING = "SecretMissing"
    PVC_MISSING = "PVCMissing"
    LEADER_WORKER_SET_MISSING = "LeaderWorkerSetMissing"
    KEDA_MISSING = "KEDAMissing"
    KARPENTER_MISSING = "KarpenterMissing"
    # PlanFeasible
    PLANNED = "Planned"
    # ModelCached
    DOWNLOADED = "Downloaded"
    DOWNLOADING = "Downloading"
    DOWNLOAD_FAILED = "DownloadFailed"
    CACHE_DISABLED = "CacheDisabled"
    USER_VOLUME = "UserVolume"
    # NodePoolReady
    EXISTING_NODES = "ExistingNodes"
    NODE_POOL_MISSING = "NodePoolMissing"
    NODE_POOL_PENDING = "NodePoolPending"
    NODE_POOL_READY = "NodePoolReady"
    NODE_POOL_NOT_READY = "NodePoolNotReady"
    # AdaptersLoaded
    ADAPTERS_LOADED = "AdaptersLoaded"
    ADAPTERS_LOADING = "AdaptersLoading"
    ADAPTER_LOAD_FAILED = "AdapterLoadFailed"
    # Qwen3Router
    ROUTER_NOT_READY = "RouterNotReady"
    BACKEND_MISSING = "BackendMissing"
    INFERENCE_POOL_CRD_MISSING = "InferencePoolCRDMissing"
    EXTERNAL_BUDGET_EXHAUSTED = "ExternalBudgetExhausted"


BLOCKING_REASONS = frozenset(
    {
        Reason.PLAN_INFEASIBLE,
        Reason.INVALID_SPEC,
        Reason.SECRET_MISSING,
        Reason.PVC_MISSING,
        Reason.LEADER_WORKER_SET_MISSING,
        Reason.KEDA_MISSING,
        Reason.KARPENTER_MISSING,
    }
)
"""Reasons that stop a reconcile before any child is applied."""
SPEC_REASONS = frozenset({Reason.PLAN_INFEASIBLE, Reason.INVALID_SPEC})
"""Blocking reasons only a new spec fixes (no retry until the spec changes)."""


@dataclass(frozen=True)
class Cond:
    """A condition as the reconcile decides it; time and generation are added when merged."""

    type: ConditionType
    status: bool | None
    reason: Reason
    message: str = ""

    @property
    def status_text(self) -> str:
        """True, False or Unknown."""
        return "Unknown" if self.status is None else str(self.status)


def merge_conditions(current: list[Obj], wanted: list[Cond], generation: int, now: str) -> list[Obj]:
    """The new conditions list: ours replaced in place, others' kept, transition times kept unless flipped."""
    by_type = {c.get("type"): c for c in current}
    merged: list[Obj] = [c for c in current if c.get("type") not in {w.type for w in wanted}]
    for cond in wanted:
        old = by_type.get(cond.type)
        flipped = old is None or old.get("status") != cond.status_text
        merged.append(
            {
                "type": str(cond.type),
                "status": cond.status_text,
                "reason": str(cond.reason),
                "message": cond.message[:32768],
                "lastTransitionTime": now if flipped or old is None else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    order = {str(w.type): i for i, w in enumerate(wanted)}
    return sorted(merged, key=lambda c: order.get(c.get("type", ""), len(order)))


EVENT_CONDITIONS = (ConditionType.MODEL_CACHED, ConditionType.NODE_POOL_READY)


def condition_events(current: list[Obj], wanted: list[Cond]) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) for real flips: Ready from its first value, the others only on change."""
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in current}
    events: list[tuple[str, str, str]] = []
    for cond in wanted:
        flipped = old.get(cond.type) != (cond.status_text, str(cond.reason))
        if flipped and (cond.type == ConditionType.READY or (cond.type in EVENT_CONDITIONS and cond.type in old)):
            kind = "Normal" if cond.status is not False else "Warning"
            events.append((kind, str(cond.reason), f"{cond.type}={cond.status_text}: {cond.message}"))
    return events
