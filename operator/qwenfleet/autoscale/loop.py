"""One autoscaling step for a Qwen3Deployment: scrape, decide, record the decision in status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from qwenfleet.api.deployment import Qwen3DeploymentSpec
from qwenfleet.autoscale.forecast import Slo, plan_replica_rate
from qwenfleet.autoscale.policy import Decision, Observation, Settings, State, decide
from qwenfleet.autoscale.signals import Sample, scrape_all
from qwenfleet.kube import Kube
from qwenfleet.render.names import WAKE_ANNOTATION

API_VERSION = "qwenfleet.dev/v1alpha1"
STATUS_REFRESH_SECONDS = 30.0


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


def arrivals_since(previous: dict[str, tuple[float, float]], samples: dict[str, Sample]) -> tuple[float, float]:
    """(arrived, finished) since the previous tick: per pod, finished plus the change in requests held; a new pod
    counts from zero. Pods that disappeared are left out (their last requests are not counted)."""
    arrived = finished = 0.0
    for ip, s in samples.items():
        done_before, held_before = previous.get(ip, (0.0, 0.0))
        done = max(0.0, s.finished - done_before)
        finished += done
        arrived += max(0.0, done + (s.running + s.waiting) - held_before)
    return arrived, finished


async def tick(
    kube: Kube, session: aiohttp.ClientSession, body: dict[str, Any], ready_ips: list[str], memory: Memory
) -> Decision | None:
    """Decide once; write status.autoscaler when the decision or the observed queue changed."""
    meta, status = body["metadata"], body.get("status") or {}
    plan = status.get("plan")
    if not plan or "referenceConcurrency" not in plan:
        return None  # not planned (yet), or the plan was withdrawn (infeasible): nothing to scale
    spec = Qwen3DeploymentSpec.model_validate(body.get("spec") or {})
    settings = settings_for(spec, plan)
    now = time.monotonic()
    first_tick = memory.state is None
    if memory.state is None:
        recorded = (status.get("autoscaler") or {}).get("desiredReplicas")
        desired = settings.min_replicas if recorded is None else int(recorded)
        memory.state = State(desired=desired, last_active=now)
        memory.written = dict(status.get("autoscaler") or {})
        memory.written_at = now
    by_ip = await scrape_all(session, ready_ips)
    samples = list(by_ip.values())
    tokens = sum(s.generation_tokens for s in samples)
    arrived, finished = arrivals_since(memory.counters, by_ip)
    memory.counters = {ip: (s.finished, s.running + s.waiting) for ip, s in by_ip.items()}
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
    record: dict[str, Any] = {"desiredReplicas": decision.desired, "queuePerReplica": queue}
    if decision.desired != previous or not memory.written:
        record |= {"lastScaleTime": _now(), "reason": decision.reason}
    else:
        record |= {k: memory.written.get(k) for k in ("lastScaleTime", "reason") if memory.written.get(k)}
    stale = now - memory.written_at >= STATUS_REFRESH_SECONDS
    if record != memory.written and (decision.desired != previous or not memory.written or stale):
        await kube.patch_status(API_VERSION, "Qwen3Deployment", meta["namespace"], meta["name"], {"autoscaler": record})
        memory.written, memory.written_at = record, now
    return decision if decision.desired != previous else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
