"""A fast fleet simulation in one-second steps: replicas that start, serve, drain; policies that scale them.

Service times come from the simulator's performance model (`qwenfleet.sim.engine.PerfModel`, calibrated from the
Plan); the builtin policy is the operator's own `qwenfleet.autoscale.policy.decide`.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from bench.autoscale.traces import Trace
from qwenfleet.api.plan import Plan
from qwenfleet.autoscale.forecast import TYPICAL_OUTPUT_TOKENS, Slo, plan_replica_rate
from qwenfleet.autoscale.policy import Observation, Settings, State, decide
from qwenfleet.sim.engine import PerfModel

HPA_SYNC = 15
HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW = 300
BUILTIN_INTERVAL = 10
TARGET_QUEUE = 4
SCALE_DOWN_DELAY = 300


@dataclass
class Replica:
    """One model replica: in flight requests' remaining output tokens."""

    ready_at: float
    draining: bool = False
    remaining: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Result:
    """What one policy did on one trace."""

    gpu_hours: float
    ttft: np.ndarray
    scale_times: list[tuple[float, int]]
    replicas_over_time: np.ndarray
    degraded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per request: served by the spillover size instead of the one asked for."""
    spill_gpu_hours: float = 0.0
    """GPU-hours of the warm spillover replicas (included in gpu_hours)."""
    api: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per request: sent to the closed API instead of the fleet (`ApiOverflow`)."""


@dataclass(frozen=True)
class Model:
    """A model's plan and what the simulation derives from it."""

    plan: Plan
    perf: PerfModel
    concurrency: int
    cold_start: float

    @classmethod
    def of(cls, plan: Plan) -> Model:
        """Concurrency: sequences that fit at the trace's typical ~1,100 tokens each."""
        perf = PerfModel.from_plan(plan)
        return cls(plan, perf, max(1, min(plan.max_num_seqs, plan.kv_cache_tokens // 1100)), plan.cold_start_seconds)

    def replica_rate(self) -> float:
        """Requests per second one replica finishes at full concurrency (256-token answers)."""
        return self.concurrency / (256 * self.perf.step_seconds(self.concurrency, 0))


@dataclass(frozen=True)
class Spillover:
    """The router's spillover to a warm smaller size (`spilloverTo`, docs/routing.md): `replicas` replicas of
    `model`, ready from the start and paid for all along, take the requests that arrive while the target's queue
    per ready replica is beyond `queue_per_replica` (all of them while it has none ready), as far as they have
    free sequences. What they serve is served degraded: counted apart, never as the target's attainment."""

    model: Model
    replicas: int = 1
    queue_per_replica: float = 8.0


@dataclass(frozen=True)
class ApiOverflow:
    """The router's overflow to a closed OpenAI-compatible API, decided per request on arrival from what a router
    sees (never the future): the ready replicas' free sequences F (maxNumSeqs or KV cache less running), the
    requests already waiting on the fleet Q, and the fleet's current serving rate mu = the ready replicas'
    generation tokens per second (the rate of vllm:generation_tokens_total) / the mean answer length of the
    requests it sent the fleet so far (answers are memoryless, so that is the requests a second the batch
    finishes, and so frees a sequence for the next in line). A request that would be number Q + 1 in line waits
    about max(0, Q + 1 - F) / mu (forever with no replica ready); with its expected prefill p (its prompt over the
    plan's prefill rate, plus one decode step) and the budget b = `slo_seconds` - `margin_seconds`, it goes to the
    API when p <= b < wait + p: when queueing, not its own prompt, would make it late. (A prompt no idle replica
    reads within b stays on the fleet, late or not: on 4B on an L4 at a 0.5 s margin, 0.5-0.6% of requests,
    whose long prompts carry 2% of all requests' API price, 0.36-0.5x the oracle's GPU cost.) Otherwise it joins
    the fleet and waits there whatever happens (the router does not take a request back from vLLM's queue).
    `margin_seconds` covers the estimate's error and the simulation's admission once a second (a request that
    queues waits for the next whole second).

    The API is assumed to answer within the SLO (time to first token `API_TTFT_SECONDS`) and is paid per token.
    Overflowed requests never load the fleet. SLO mode reads its arrivals from the replicas' vLLM counters
    (`autoscale.loop.arrivals_since`: finished plus the change in running + waiting, per ready pod) and its queue
    from `vllm:num_requests_waiting`, where a request the router sent elsewhere is invisible. `counted`, as the
    operator does: the router counts its overflow per target (`qwenfleet_router_overflow_requests_total`) and the
    autoscaler adds it to the arrivals (`autoscale.loop.overflow_since`); the queue still holds only the fleet's
    requests. Without it, the autoscaler is blind to the overflow."""

    slo_seconds: float
    margin_seconds: float = 0.0
    counted: bool = False


API_TTFT_SECONDS = 1.0
"""The time to first token recorded for a request the API served (assumed within the SLO)."""


class Policy:
    """Decides the replica count; `every` is its decision period in seconds."""

    every = 1

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        raise NotImplementedError


class Static(Policy):
    """Peak provisioning: the replicas the trace's busiest moment needs, all the time."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        return self.replicas


class HPA(Policy):
    """The Kubernetes HPA algorithm on vllm:num_requests_waiting (average per pod, `target`, default TARGET_QUEUE).

    15 s sync; 10% tolerance; pods not ready count as 0 for scale-up; scale-up limited to max(100%, 4 pods) per
    period; scale-down to the highest recommendation of the last `window` seconds (default 300); minReplicas 1.
    """

    every = HPA_SYNC

    def __init__(self, max_replicas: int, target: float = TARGET_QUEUE, window: float = HPA_DOWN_WINDOW) -> None:
        self.max_replicas = max_replicas
        self.target = target
        self.window = window
        self.history: deque[tuple[float, int]] = deque()

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        current = max(1, live)
        if obs.ready == 0:
            ratio = 1.0 if obs.waiting == 0 else obs.waiting / self.target / max(1, all_pods) + 1
        else:
            average = obs.waiting / obs.ready
            if average > self.target:  # scaling up: unready pods count as 0
                average = obs.waiting / max(1, all_pods)
            ratio = average / self.target
        recommendation = current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(current * ratio)
        return self._limit(t, current, recommendation)

    def _limit(self, t: float, current: int, recommendation: int) -> int:
        recommendation = max(1, min(self.max_replicas, recommendation))
        self.history.append((t, recommendation))
        while self.history and t - self.history[0][0] > self.window:
            self.history.popleft()
        if recommendation > current:
            return min(recommendation, max(2 * current, current + 4))
        return max(r for _, r in self.history)


class KEDA(HPA):
    """KEDA's Prometheus trigger as the vLLM production-stack tutorial ships it (values-19-keda.yaml):
    `vllm:num_requests_waiting`, threshold 5, pollingInterval 15, minReplicaCount 1. KEDA hands the HPA an
    external metric of type AverageValue: desired = ceil(total waiting / 5), 10% tolerance, the HPA's default
    scale-up limit and 300 s scale-down stabilisation (cooldownPeriod only governs 1 <-> 0)."""

    def __init__(self, max_replicas: int) -> None:
        super().__init__(max_replicas, target=5, window=HPA_DOWN_WINDOW)

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        current = max(1, live)
        usage = obs.waiting / self.target
        recommendation = current if abs(usage / current - 1) <= HPA_TOLERANCE else math.ceil(usage)
        return self._limit(t, current, recommendation)


class Builtin(Policy):
    """qwenfleet's policy, called exactly as the operator calls it (the plan's reference concurrency and rate, and
    each replica's KV cache use); `slo` turns on SLO mode."""

    every = BUILTIN_INTERVAL

    def __init__(self, model: Model, max_replicas: int, slo: Slo | None = None) -> None:
        self.settings = Settings(min_replicas=1, max_replicas=max_replicas, target_queue=TARGET_QUEUE,
                                 scale_down_delay=SCALE_DOWN_DELAY, idle_to_zero=900,
                                 concurrency=model.plan.reference_concurrency, slo=slo,
                                 cold_start=model.cold_start, max_num_seqs=model.plan.max_num_seqs,
                                 replica_rate=plan_replica_rate(model.plan.decode_tokens_per_second))  # fmt: skip
        self.state = State(desired=1)

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        decision = decide(t, obs, self.settings, self.state)
        self.state = decision.state
        return decision.desired


class Oracle(Policy):
    """Perfect foresight: knows every arrival and the cold start; has exactly what the next cold start needs."""

    def __init__(self, needed: np.ndarray, cold_start: float) -> None:
        horizon = int(cold_start) + 30
        padded = np.concatenate([needed, np.zeros(horizon + 1, dtype=int)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, horizon + 1)
        self.plan = windows.max(axis=1)[: len(needed)]

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        return max(1, int(self.plan[min(int(t), len(self.plan) - 1)]))


class Reactive(Policy):
    """The best a policy without foresight can do, as a bound: it knows, each second, exactly the replicas the
    current load needs (no estimate, no noise) plus what clears the queue, asks for them at once and releases
    them at once (flaps allowed), and holds `floor` replicas warm all the time. Onsets it cannot see coming are
    met by the floor, or by the spillover, until new replicas finish their cold start."""

    def __init__(self, needed: np.ndarray, concurrency: int, floor: int, max_replicas: int) -> None:
        self.needed = needed
        self.concurrency = concurrency
        self.floor = floor
        self.max_replicas = max_replicas

    def desired(self, t: float, obs: Observation, live: int, all_pods: int) -> int:
        now = int(self.needed[min(int(t), len(self.needed) - 1)]) + math.ceil(obs.waiting / self.concurrency)
        return max(1, self.floor, min(self.max_replicas, now))


def needed_replicas(trace: Trace, model: Model, duration: int) -> np.ndarray:
    """Replicas needed each second if requests were served at full-concurrency speed without queueing."""
    step = model.perf.step_seconds(model.concurrency, 0)
    ends = trace.arrivals + trace.prompt_tokens / model.perf.prefill_tokens_per_second + trace.output_tokens * step
    delta = np.zeros(duration + 1)
    np.add.at(delta, np.minimum(trace.arrivals.astype(int), duration), 1)
    np.add.at(delta, np.minimum(ends.astype(int), duration), -1)
    inflight = np.cumsum(delta)[:duration]
    return np.ceil(inflight / model.concurrency).astype(int)


def _decode(replicas: list[Replica], model: Model, t: float) -> tuple[float, int]:
    """One second of decoding on the ready replicas: (tokens produced, requests finished)."""
    produced, finished = 0.0, 0
    for replica in replicas:
        if replica.ready_at <= t and len(replica.remaining):
            rate = 1.0 / model.perf.step_seconds(len(replica.remaining), 0)
            produced += float(np.minimum(replica.remaining, rate).sum())
            replica.remaining = replica.remaining - rate
            finished += int((replica.remaining <= 0).sum())
            replica.remaining = replica.remaining[replica.remaining > 0]
    return produced, finished


def _admit(replica: Replica, model: Model, idx: np.ndarray, trace: Trace, t: int, ttft: np.ndarray) -> None:
    """Requests `idx` join `replica`'s batch; their time to first token: wait, prefill, one decode step."""
    step = model.perf.step_seconds(len(replica.remaining) + len(idx), 0)
    ttft[idx] = (
        np.maximum(t - trace.arrivals[idx], 0) + trace.prompt_tokens[idx] / model.perf.prefill_tokens_per_second + step
    )
    replica.remaining = np.concatenate([replica.remaining, trace.output_tokens[idx].astype(float)])


def _spill(queue: deque[int], ready: int, spill: Spillover, alternates: list[Replica], trace: Trace, t: int,
           ttft: np.ndarray, degraded: np.ndarray) -> None:  # fmt: skip
    """Send the newest queued requests beyond the target's spillover threshold to the alternate's free sequences."""
    excess = len(queue) - int(spill.queue_per_replica * ready)
    for replica in sorted(alternates, key=lambda r: len(r.remaining)):
        free = min(excess, spill.model.concurrency - len(replica.remaining))
        if free <= 0:
            continue
        idx = np.array([queue.pop() for _ in range(free)])
        _admit(replica, spill.model, idx, trace, t, ttft)
        degraded[idx] = True
        excess -= free


def _overflow(new: range, queue: deque[int], ready: list[Replica], model: Model, overflow: ApiOverflow,
              serving_rate: float, trace: Trace, ttft: np.ndarray, api: np.ndarray) -> list[int]:  # fmt: skip
    """Queue the arrivals `new` on the fleet or send them to the API (`ApiOverflow`); returns those that joined
    the fleet."""
    free = sum(max(0, model.concurrency - len(r.remaining)) for r in ready)
    step = model.perf.step_seconds(model.concurrency, 0)
    budget = overflow.slo_seconds - overflow.margin_seconds
    joined: list[int] = []
    for i in new:
        ahead = len(queue) + 1 - free
        wait = 0.0 if ahead <= 0 else (ahead / serving_rate if serving_rate > 0 else math.inf)
        prefill = trace.prompt_tokens[i] / model.perf.prefill_tokens_per_second + step
        if prefill <= budget < wait + prefill:
            api[i] = True
            ttft[i] = API_TTFT_SECONDS
        else:
            queue.append(i)
            joined.append(i)
    return joined


def simulate(
    trace: Trace,
    model: Model,
    policy: Policy,
    duration: int,
    warm: int = 1,
    spill: Spillover | None = None,
    overflow: ApiOverflow | None = None,
) -> Result:
    """Run the fleet under `policy` for `duration` seconds of the trace, starting with `warm` ready replicas
    (the provisioned policies start with what they ask for); with `spill`, the router spills to a warm smaller
    size; with `overflow`, it sends requests that would miss the SLO on the fleet to a closed API."""
    idle = Observation(ready=0, waiting=0.0, running=0.0, kv_usage=0.0, active=False)
    initial = max(1, policy.desired(0.0, idle, 1, 1)) if isinstance(policy, (Static, Oracle)) else max(1, warm)
    if isinstance(policy, Builtin):
        policy.state = replace(policy.state, desired=initial)
    replicas: list[Replica] = [Replica(ready_at=0.0) for _ in range(initial)]
    queue: deque[int] = deque()
    ttft = np.full(len(trace.arrivals), np.nan)
    gpu_seconds = 0.0
    next_arrival = 0
    scale_times: list[tuple[float, int]] = [(0.0, initial)]
    over_time = np.zeros(duration, dtype=int)
    last_tokens = 0.0
    produced = 0.0
    arrived = finished = 0
    alternates = [Replica(ready_at=0.0) for _ in range(spill.replicas if spill else 0)]
    degraded = np.zeros(len(trace.arrivals), dtype=bool)
    spill_seconds = 0.0
    api = np.zeros(len(trace.arrivals), dtype=bool)
    answered, answered_tokens = 0, 0.0  # requests the fleet took and their answers' tokens: the router's mean length
    for t in range(duration):
        ready = [r for r in replicas if r.ready_at <= t and not r.draining]
        first = next_arrival
        while next_arrival < len(trace.arrivals) and trace.arrivals[next_arrival] < t + 1:
            next_arrival += 1
        if overflow is None:
            queue.extend(range(first, next_arrival))
            arrived += next_arrival - first
        else:
            seen = answered_tokens / answered if answered else TYPICAL_OUTPUT_TOKENS  # before any: the plan's guess
            decoding = sum(len(r.remaining) / model.perf.step_seconds(len(r.remaining), 0) for r in ready
                           if len(r.remaining))  # fmt: skip
            joined = _overflow(range(first, next_arrival), queue, ready, model, overflow, decoding / seen, trace,
                               ttft, api)  # fmt: skip
            arrived += next_arrival - first if overflow.counted else len(joined)
            answered += len(joined)
            answered_tokens += float(trace.output_tokens[joined].sum())
        for replica in sorted(ready, key=lambda r: len(r.remaining)):
            free = model.concurrency - len(replica.remaining)
            if free <= 0 or not queue:
                continue
            _admit(replica, model, np.array([queue.popleft() for _ in range(min(free, len(queue)))]), trace, t, ttft)
        if spill is not None:
            _spill(queue, len(ready), spill, alternates, trace, t, ttft, degraded)
            _decode(alternates, spill.model, t)
            spill_seconds += len(alternates) * spill.model.plan.gpus_per_replica
        tokens, done = _decode(replicas, model, t)
        produced += tokens
        finished += done
        replicas = [r for r in replicas if not (r.draining and len(r.remaining) == 0)]
        gpu_seconds += len(replicas) * model.plan.gpus_per_replica
        over_time[t] = len(replicas)
        if t % policy.every == 0:
            live = [r for r in replicas if not r.draining]
            ready_live = [r for r in live if r.ready_at <= t]
            running = sum(len(r.remaining) for r in ready_live)
            obs = Observation(
                ready=len(ready_live),
                waiting=float(len(queue)),
                running=float(running),
                kv_usage=max((len(r.remaining) / model.concurrency for r in ready_live), default=0.0),
                kv_total=sum(len(r.remaining) / model.concurrency for r in ready_live),
                active=produced > last_tokens or bool(queue),
                arrivals=float(arrived),
                finished=float(finished),
            )
            last_tokens = produced
            arrived = finished = 0
            want = policy.desired(float(t), obs, len(live), len(replicas))
            if want != len(live):
                scale_times.append((float(t), want))
            if want > len(live):
                replicas += [Replica(ready_at=t + model.cold_start) for _ in range(want - len(live))]
            elif want < len(live):
                starting = [r for r in live if r.ready_at > t]
                victims = (starting + sorted(ready_live, key=lambda r: len(r.remaining)))[: len(live) - want]
                for r in victims:
                    r.draining = True
                replicas = [r for r in replicas if not (r.draining and (r.ready_at > t or len(r.remaining) == 0))]
    return Result((gpu_seconds + spill_seconds) / 3600, ttft, scale_times, over_time, degraded, spill_seconds / 3600,
                  api)  # fmt: skip


def flaps(scale_times: list[tuple[float, int]], window: float = SCALE_DOWN_DELAY) -> int:
    """Reversals of direction within `window` seconds of the previous change."""
    count = 0
    changes = [(t, n - p) for (t, n), (_, p) in zip(scale_times[1:], scale_times, strict=False) if n != p]
    for (t0, d0), (t1, d1) in itertools.pairwise(changes):
        if d0 * d1 < 0 and t1 - t0 < window:
            count += 1
    return count
