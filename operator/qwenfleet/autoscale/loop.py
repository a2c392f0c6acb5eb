"""One autoscaling step for a Qwen3Deployment: scrape, decide, record the decision in status; SLO mode's memory
is restored from its checkpoint on the first step and checkpointed as it grows (see `autoscale.checkpoint`)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from qwenfleet.api.base import API_VERSION
from qwenfleet.api.deployment import AutoscalerStatus, Qwen3DeploymentSpec
from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.forecast import Forecast, Slo, plan_replica_rate
from qwenfleet.autoscale.policy import Decision, Observation, Settings, State, decide
from qwenfleet.enginemetrics.parse import EngineSample
from qwenfleet.enginemetrics.scrape import Scraper
from qwenfleet.kube import Kube, KubeError
from qwenfleet.render.names import WAKE_ANNOTATION

STATUS_REFRESH_SECONDS = 30.0
CHECKPOINT_SECONDS = 600.0
"""How often SLO mode's memory is checkpointed at most (and only when a minute closed since): a crash loses at
most this much history, a graceful stop none; at 1,000 SLO deployments, under 2 writes a second."""

log = logging.getLogger(__name__)


@dataclass
class Memory:
    """Per-deployment state the loop keeps between ticks (rebuilt from status after a restart)."""

    state: State | None = None
    tokens: float = 0.0
    wake_seen: str | None = None
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0
    counters: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per pod IP: (finished, running + waiting) at the previous tick, to count arrivals for SLO mode."""
    overflow: dict[str, float] = field(default_factory=dict)
    """Per router pod IP: its count of this deployment's requests that another backend served, at the last tick."""
    plan: str | None = None
    """The plan the forecast's replica learning belongs to (`checkpoint.plan_key`)."""
    owner: tuple[str, str, str] | None = None
    """(namespace, name, uid) of the deployment, for its checkpoint."""
    checkpointed: float | None = None
    """The forecast's `bucket_start` when it was last checkpointed (or restored): unchanged, nothing new to save."""
    checkpoint_at: float | None = None
    foreign: bool | None = None
    """Whether the checkpoint's name is taken by a ConfigMap qwenfleet did not make (never written over); None
    until this process has looked (on the restore, or before its first write)."""
    checkpoint_events: Counter[str] = field(default_factory=Counter)
    """Checkpoints restored, fresh, written, failed or declined since the owner last collected them (metrics)."""


def settings_for(spec: Qwen3DeploymentSpec, plan: dict[str, Any]) -> Settings:
    """Policy settings from the spec and the plan in status."""
    scaling = spec.autoscaling
    assert scaling is not None
    concurrency = int(plan["referenceConcurrency"])  # the planner's number, not a second estimate
    return Settings(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        target_queue=scaling.target_queue_depth,
        scale_down_delay=scaling.scale_down_delay_seconds,
        idle_to_zero=scaling.scale_to_zero_after_seconds,
        concurrency=max(1, concurrency),
        slo=None if scaling.slo is None else Slo(scaling.slo.ttft_seconds, scaling.slo.attainment),
        cold_start=float(plan["coldStartSeconds"]),
        replica_rate=plan_replica_rate(float(plan["decodeTokensPerSecond"])),
        max_num_seqs=int(plan.get("maxNumSeqs") or 0),
    )


def arrivals_since(previous: dict[str, tuple[float, float]], samples: dict[str, EngineSample]) -> tuple[float, float]:
    """(arrived, finished) since the previous tick: per pod, finished plus the change in requests held; a new pod
    counts from zero. Pods that disappeared are left out (their last requests are not counted)."""
    arrived = finished = 0.0
    for ip, s in samples.items():
        done_before, held_before = previous.get(ip, (0.0, 0.0))
        done = max(0.0, s.finished - done_before)
        finished += done
        arrived += max(0.0, done + (s.running + s.waiting) - held_before)
    return arrived, finished


def overflow_since(previous: dict[str, float], now: dict[str, float]) -> float:
    """Requests served elsewhere since the previous tick, over every router pod (a new or restarted pod counts
    from zero)."""
    total = 0.0
    for ip, value in now.items():
        before = previous.get(ip)
        total += value if before is None or value < before else value - before
    return total


async def tick(
    kube: Kube,
    scraper: Scraper,
    body: dict[str, Any],
    ready_ips: list[str],
    memory: Memory,
    checkpoint_every: float = CHECKPOINT_SECONDS,
    overflow: dict[str, float] | None = None,
) -> Decision | None:
    """Decide once; write status.autoscaler when the decision or the observed queue changed.

    `overflow`: per router pod IP, its count of requests meant for this deployment that another backend served
    (spillover, a fallback while it woke, an external API). They arrived for it as much as those its replicas
    saw, so SLO mode sizes on both."""
    meta, status = body["metadata"], body.get("status") or {}
    plan = status.get("plan")
    if not plan or "referenceConcurrency" not in plan:
        return None  # not planned (yet), or the plan was withdrawn (infeasible): nothing to scale
    spec = Qwen3DeploymentSpec.model_validate(body.get("spec") or {})
    settings = settings_for(spec, plan)
    now = time.monotonic()
    first_tick = memory.state is None
    plan_key = checkpoint.plan_key(plan)
    memory.owner = (meta["namespace"], meta["name"], str(meta.get("uid", "")))
    if memory.state is None:
        recorded = (status.get("autoscaler") or {}).get("desiredReplicas")
        desired = settings.min_replicas if recorded is None else int(recorded)
        forecast = Forecast() if settings.slo is None else await restore(kube, meta, plan_key, now, memory)
        if settings.slo is not None:
            memory.checkpoint_events["restored" if forecast.bucket_start is not None else "fresh"] += 1
        memory.state = State(desired=desired, last_active=now, forecast=forecast)
        memory.checkpointed = forecast.bucket_start
        memory.written = dict(status.get("autoscaler") or {})
        memory.written_at = now
    elif memory.plan != plan_key:  # another model, GPU or batch: what a replica held and how fast is unknown again
        memory.state = replace(memory.state, forecast=memory.state.forecast.without_replica_learning())
    memory.plan = plan_key
    by_ip = await scraper.samples(ready_ips)  # fresh: the cost loop shares this one
    samples = list(by_ip.values())
    tokens = sum(s.generation_tokens for s in samples)
    arrived, finished = arrivals_since(memory.counters, by_ip)
    memory.counters = {ip: (s.finished, s.running + s.waiting) for ip, s in by_ip.items()}
    if overflow is not None:
        arrived += overflow_since(memory.overflow, overflow)
        memory.overflow = dict(overflow)
    wake_value = (meta.get("annotations") or {}).get(WAKE_ANNOTATION)
    wake = wake_value is not None and wake_value != memory.wake_seen
    memory.wake_seen = wake_value
    obs = Observation(
        ready=len(samples),
        waiting=sum(s.waiting for s in samples),
        running=sum(s.running for s in samples),
        kv_usage=max((s.kv for s in samples), default=0.0),
        kv_total=sum(s.kv for s in samples),
        active=tokens > memory.tokens,
        wake=wake,
        arrivals=None if first_tick else arrived,
        finished=finished,
    )
    memory.tokens = tokens
    previous = memory.state.desired
    decision = decide(now, obs, settings, memory.state)
    memory.state = decision.state
    queue = round(obs.waiting / max(1, obs.ready), 1)
    scaled = decision.desired != previous or not memory.written
    record = AutoscalerStatus(
        desired_replicas=decision.desired,
        queue_per_replica=queue,
        last_scale_time=_now() if scaled else memory.written.get("lastScaleTime") or None,
        reason=decision.reason if scaled else str(memory.written.get("reason") or ""),
    )
    stale = now - memory.written_at >= STATUS_REFRESH_SECONDS
    wire = record.to_wire()
    if wire != memory.written and (scaled or stale):
        patch = {"autoscaler": record.to_patch()}
        await kube.patch_status(API_VERSION, "Qwen3Deployment", meta["namespace"], meta["name"], patch)
        memory.written, memory.written_at = wire, now
    if settings.slo is not None and (memory.checkpoint_at is None or now - memory.checkpoint_at >= checkpoint_every):
        await save(kube, memory, now)
    return decision if decision.desired != previous else None


async def restore(
    kube: Kube, meta: dict[str, Any], plan_key: str, now: float, memory: Memory | None = None
) -> Forecast:
    """SLO mode's memory from its checkpoint; a fresh one when there is none or it cannot be read. What was found
    under the checkpoint's name is remembered in `memory` (the first write need not look again)."""
    try:
        found = await kube.get("v1", "ConfigMap", checkpoint.configmap_name(meta["name"]), meta["namespace"])
    except KubeError as exc:
        log.warning("autoscaler %s/%s: no checkpoint read, starting afresh: %s", meta["namespace"], meta["name"], exc)
        return Forecast()
    ours = checkpoint.is_ours(found)
    if memory is not None:
        memory.foreign = not ours
    owners = ((found or {}).get("metadata") or {}).get("ownerReferences") or []
    if found is None or not ours or not any(o.get("uid") == meta.get("uid") for o in owners):
        return Forecast()  # none, the user's own, or left by an earlier deployment of the same name
    return checkpoint.from_data(found.get("data"), plan_key, now, time.time())


async def save(kube: Kube, memory: Memory, now: float | None = None) -> bool:
    """Checkpoint SLO mode's memory when a minute closed since the last checkpoint; True when written. A failed
    write is logged and tried again on a later step."""
    now = time.monotonic() if now is None else now
    if memory.state is None or memory.owner is None or memory.plan is None:
        return False
    forecast = memory.state.forecast
    if not forecast.buckets or forecast.bucket_start == memory.checkpointed:
        return False
    data = checkpoint.to_data(forecast, memory.plan, now, time.time())
    if data is None:
        return False
    namespace, name, uid = memory.owner
    try:
        if memory.foreign is not False:  # not known yet, or the user's: is the name free, or ours?
            found = await kube.get("v1", "ConfigMap", checkpoint.configmap_name(name), namespace)
            memory.foreign = not checkpoint.is_ours(found)
            if memory.foreign:
                memory.checkpointed, memory.checkpoint_at = forecast.bucket_start, now  # asked again in an interval
                memory.checkpoint_events["declined"] += 1
                log.warning("autoscaler %s/%s: ConfigMap %s is not a qwenfleet checkpoint; SLO mode's memory is not "
                            "saved", namespace, name, checkpoint.configmap_name(name))  # fmt: skip
                return False
        await kube.apply(checkpoint.configmap(namespace, name, uid, data))
    except KubeError as exc:
        log.warning("autoscaler %s/%s: checkpoint not written: %s", namespace, name, exc)
        memory.checkpoint_events["failed"] += 1
        return False
    memory.checkpointed, memory.checkpoint_at = forecast.bucket_start, now
    memory.checkpoint_events["written"] += 1
    return True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
