"""The builtin autoscaling policy: replicas from queue depth, running requests and KV pressure. Pure.

- Demand is what the replicas hold or queue (running + waiting). A replica comfortably serves its effective
  concurrency plus `target_queue` waiting requests, so wanted = ceil(demand / (concurrency + target_queue)).
- Replicas still starting count as capacity on its way: the comparison is against the current *desired*
  count, not the ready one, so a big model's minutes of cold start do not trigger more and more scale-ups.
- Scale-up is immediate (rate-limited to doubling plus four per decision); a full KV cache with requests
  waiting adds a replica even when the queue is short.
- Scale-down waits and keeps headroom: the highest recommendation of the last `scale_down_delay` seconds
  wins, where a recommendation is the replicas that would carry the demand at 70% of their concurrency;
  nothing scales down within `scale_down_delay` of a scale-up or of the first decision (a restarted operator has
  no window yet), and one replica goes at a time.
- SLO mode (`Settings.slo`): the replicas `forecast.slo_replicas` sizes for the latency objective one cold start
  ahead (arrival rate, trend, a recurring pattern, headroom from observed variability) raise the queue-depth
  count whenever they are higher. Scale-down keeps the same delay and steps, never goes to zero while the SLO
  sizing asks for a replica, and waits until the SLO sizing `forecast.slo_replicas(...).keep` (the trend and
  recurring load the scale-down delay may bring, the headroom, and the rate's measurement error) allows it;
  that keep replaces queue mode's 70% floor. SLO mode also knows the arrival rate each recommendation in the window
  was made at: one made before the rate fell far beyond its noise (a burst's end, `level_dropped`) is not held, since
  the keep already prices what the delay may bring back; nor is any made before the forecast found (or lost) a period.
  Within the scale-down delay of a scale-down, SLO mode scales up again only for requests actually waiting (or a
  wake): a forecast moved by noise does not undo a scale-down (no flap). SLO mode's concurrency is what a replica's KV
  cache was seen to hold (running over KV cache in use, capped at maxNumSeqs; the plan's figure until then), and the
  queue rule uses it too in SLO mode. The service time is learnt from replicas at `FULL_OCCUPANCY` or more once enough
  requests finished there (a fuller batch decodes each request more slowly), else from busy ones.
- Scale to zero after `idle_to_zero` seconds without any request, when minReplicas is 0; a wake request
  (from the router) or any queued request brings one replica back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from qwenfleet.autoscale.forecast import TREND_SECONDS, Forecast, Slo, slo_replicas

KV_PRESSURE = 0.9
BUSY_OCCUPANCY = 0.3
"""SLO mode learns a replica's service time only while replicas run at least this share of their concurrency."""
FULL_OCCUPANCY = 0.8
"""Once enough requests finished while replicas ran this share of their concurrency, SLO mode plans with the
service time seen then: a replica at 30% of its batch decodes each request faster than a full one."""
SCALE_DOWN_UTILIZATION = 0.7
"""Scale down only when the remaining replicas would run at most this share of their capacity (hysteresis)."""


@dataclass(frozen=True)
class Settings:
    """The deployment's autoscaling spec and its plan's capacity."""

    min_replicas: int
    max_replicas: int
    target_queue: float
    scale_down_delay: float
    idle_to_zero: float
    concurrency: int
    """Sequences one replica runs at once at typical lengths: min(maxNumSeqs, KV tokens / 2048)."""
    slo: Slo | None = None
    """SLO mode: also size for this objective (see `forecast.slo_replicas`)."""
    cold_start: float = 0.0
    """The plan's seconds from a new replica's start to ready: how far ahead SLO mode must look."""
    replica_rate: float = 0.0
    """Requests per second one replica serves (the plan's estimate), until the replicas' own figures say otherwise."""
    max_num_seqs: int = 0
    """vLLM's cap on sequences per replica (0: none known): SLO mode's learnt concurrency never exceeds it."""


@dataclass(frozen=True)
class Observation:
    """What the replicas' /metrics said, summed over ready replicas."""

    ready: int
    waiting: float
    running: float
    kv_usage: float
    active: bool
    """Any request seen since the previous observation (tokens generated, or requests present)."""
    wake: bool = False
    arrivals: float | None = None
    """Requests that arrived since the previous observation (None: not known; SLO mode then sizes on demand)."""
    finished: float = 0.0
    """Requests that finished since the previous observation."""
    kv_total: float | None = None
    """vllm:kv_cache_usage_perc summed over the ready replicas (None: not known)."""


@dataclass(frozen=True)
class State:
    """What the policy remembers between decisions."""

    desired: int
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    last_active: float = 0.0
    recommendations: tuple[tuple[float, int, float], ...] = ()
    """(time, replicas to keep, arrival rate then) of each decision within the scale-down delay."""
    started: float | None = None
    """The first decision's time: nothing scales down before a whole scale-down delay has been observed."""
    forecast: Forecast = field(default_factory=Forecast)


@dataclass(frozen=True)
class Decision:
    """The replica count to run now, why, and the state to remember."""

    desired: int
    reason: str
    state: State


def wanted_replicas(obs: Observation, s: Settings) -> int:
    """Replicas the current demand needs, before limits and delays."""
    demand = obs.running + obs.waiting
    wanted = math.ceil(demand / (max(1, s.concurrency) + s.target_queue)) if demand > 0 else 0
    if obs.kv_usage >= KV_PRESSURE and obs.waiting > 0:
        wanted = max(wanted, obs.ready + 1)
    return wanted


def sufficient_replicas(obs: Observation, s: Settings) -> int:
    """Replicas that carry the demand at SCALE_DOWN_UTILIZATION of their concurrency: the floor for scaling down."""
    demand = obs.running + obs.waiting
    return math.ceil(demand / (SCALE_DOWN_UTILIZATION * max(1, s.concurrency))) if demand > 0 else 0


LEVEL_DROP_SIGMAS = 4.0
"""A rate this many standard errors below an earlier one (two independent `TREND_SECONDS` Poisson estimates)
is a new level of load, not noise."""


def level_dropped(before: float, now: float) -> bool:
    """Whether the arrival rate fell from `before` to `now` (per second, each measured over TREND_SECONDS) by
    more than LEVEL_DROP_SIGMAS standard errors."""
    return before - now > LEVEL_DROP_SIGMAS * math.sqrt((before + now) / TREND_SECONDS)


def slo_concurrency(forecast: Forecast, s: Settings) -> int:
    """Sequences one replica runs at once, for SLO mode's staffing: what its KV cache was seen to hold at the
    requests' actual lengths (capped at maxNumSeqs), else the plan's figure at 2,048-token requests."""
    learnt = forecast.sequences_per_replica()
    if learnt is None:
        return max(1, s.concurrency)
    return max(1, min(int(learnt), s.max_num_seqs or int(learnt)))


def decide(now: float, obs: Observation, s: Settings, state: State) -> Decision:
    """The next replica count."""
    demand = obs.running + obs.waiting
    last_active = now if (obs.active or demand > 0 or obs.wake) else state.last_active
    raw = wanted_replicas(obs, s)
    forecast = state.forecast
    slo_reason = ""
    slo_keep = 0
    if s.slo is not None:
        concurrency = slo_concurrency(forecast, s)
        busy = obs.running >= BUSY_OCCUPANCY * obs.ready * concurrency > 0
        full = obs.running >= FULL_OCCUPANCY * obs.ready * concurrency > 0
        forecast = forecast.observe(now, obs.arrivals, obs.finished, obs.running, busy, full, obs.kv_total)
        forecast = forecast.with_headroom_cached(s.cold_start, s.slo.attainment)
        concurrency = slo_concurrency(forecast, s)
        raw = wanted_replicas(obs, replace(s, concurrency=concurrency))  # the queue rule, at the same concurrency
        # the plan's rate per replica belongs to the plan's concurrency: scaled, it keeps the plan's service time
        prior_rate = s.replica_rate * concurrency / max(1, s.concurrency)
        sized = slo_replicas(forecast, s.slo, s.cold_start, concurrency, prior_rate, obs.waiting,
                             keep_horizon=s.scale_down_delay)  # fmt: skip
        slo_keep = sized.keep
        if sized.replicas > raw:
            raw, slo_reason = sized.replicas, f" for the SLO ({sized.why})"
    # SLO mode's own keep replaces queue mode's 70% floor: it knows the rate, its noise and what is coming
    keep = max(raw, slo_keep) if s.slo is not None else max(raw, sufficient_replicas(obs, s))
    rate = forecast.rate()
    window = (*((t, r, q) for t, r, q in state.recommendations if now - t < s.scale_down_delay), (now, keep, rate))
    if forecast.period != state.forecast.period:
        window = ((now, keep, rate),)  # made under a forecast that no longer holds: a period found, or lost
    current = state.desired
    started = now if state.started is None else state.started

    def result(desired: int, reason: str) -> Decision:
        desired = max(0, min(s.max_replicas, desired))
        up = desired > current
        down = desired < current
        new = replace(
            state,
            desired=desired,
            last_active=last_active,
            recommendations=window,
            started=started,
            forecast=forecast,
            last_scale_up=now if up else state.last_scale_up,
            last_scale_down=now if down else state.last_scale_down,
        )
        return Decision(desired, reason, new)

    if current == 0:
        if obs.wake or demand > 0:
            return result(max(1, s.min_replicas, min(raw, 4)), "wake: a request arrived for a model at zero")
        if s.min_replicas > 0:
            return result(s.min_replicas, "raised to minReplicas")
        return result(0, "idle at zero")
    floor = max(1, s.min_replicas)
    since_down = now - state.last_scale_down if state.last_scale_down is not None else math.inf
    if raw > current and s.slo is not None and since_down < s.scale_down_delay and obs.waiting == 0 and not obs.wake:
        # SLO mode just released a replica: a forecast that moved by noise does not take it back (a flap);
        # requests actually waiting do
        return result(current, f"holding: scaled down {since_down:.0f}s ago, nothing waits")
    if raw > current:
        step = min(raw, current * 2 + 4)
        return result(step, f"scale up: {demand:.0f} requests in flight need {raw} replicas{slo_reason}")
    if s.min_replicas == 0 and demand == 0 and not slo_reason and now - last_active >= s.idle_to_zero:
        return result(0, f"scale to zero: idle for {now - last_active:.0f}s")
    if current < floor:
        return result(floor, "raised to minReplicas")
    # SLO mode knows the rate each recommendation was made at: one made before a drop far beyond noise (a
    # burst's end) belongs to a load that is gone, and holding it would only delay what the keep allows
    held = window if s.slo is None else tuple(w for w in window if not level_dropped(w[2], rate))
    stable = max(*(r for _, r, _ in held), floor)
    cooling = (state.last_scale_up is not None and now - state.last_scale_up < s.scale_down_delay) or (
        now - started < s.scale_down_delay
    )
    if stable < current and not cooling:
        return result(current - 1, f"scale down: {stable} replicas have sufficed for {s.scale_down_delay:.0f}s")
    return result(current, "steady")
