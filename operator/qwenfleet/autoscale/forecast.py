"""SLO mode's arithmetic: arrival history, its trend, a recurring pattern, and the replicas an SLO needs. Pure.

- The arrival rate is kept per minute (up to two days) and, for the trend, per observation over the last two
  minutes; a step up beyond Poisson noise counts at once (`Forecast.level`), not as the two minutes' mean.
- A recurring pattern (an hourly cycle, a daily one, anything from 5 minutes to 2 hours, or exactly a day) is
  found by autocorrelation of the minute-to-minute changes, which ignores slow trends and catches sharp edges; it
  counts only after two full periods were seen, over at least 20 pairs of changes. With a period, the rate one
  period ago, from now to one cold start ahead, is a forecast: replicas are warm before the load recurs.
- Headroom is sized from what was observed, in requests: a fleet sized one cold start ago for the rate then (or,
  with a period, for the period's forecast) meets every later minute's arrivals beyond that rate plus the headroom
  too late. The headroom is the least for which those requests, over the whole history, stay within 1 -
  `attainment` of all requests, once the history is long enough to judge that tail (30 minutes at 0.99; until
  then, after a deployment's start or an operator's restart, the largest rise seen). Erratic load buys warm
  headroom, calm or predictable load none, and a rare surge only as much as its requests weigh in the objective (a
  quantile of rises over time would buy a whole surge whenever surges start in more than 1 - `attainment` of the
  minutes). A rise within the Poisson noise of two minute counts is not a rise, and a trend counts only beyond its
  standard error: noise is what the staffing below covers.
- Replicas = enough concurrency for what the forecast rate keeps in flight (the larger of now-plus-trend and of
  the current or recurring rate plus headroom: trend and headroom both answer how far the rate may rise; during a
  rise the period foresees, the trend goes no further than the recurring rate plus headroom), plus
  `z` standard deviations of that Poisson count, z the normal quantile of `attainment` (square-root staffing);
  and enough to clear the waiting requests within `ttftSeconds`.
  A replica's capacity is its concurrency over the service time observed while replicas were nearly full, or
  else busy (running / finished per second, Little's law), or the plan's estimate until then.
- Keep (scale-down hysteresis): the same staffing with the trend and the recurring load over one cold start
  plus the scale-down delay, the same headroom, and the measured rate's own error on top: a replica goes only
  when neither a trend, nor the period, nor noise would ask for it again within the delay. Rises that no
  forecast sees are the headroom's business, sized for the objective; holding a whole surge's replicas through
  every quiet spell because surges happen is what `minReplicas` is for.
"""

from __future__ import annotations

import itertools
import math
import operator
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

BUCKET_SECONDS = 60.0
HISTORY_BUCKETS = 2 * 1440
TREND_SECONDS = 120.0
LEVEL_RISE_SIGMAS = 5.0
"""A step up counts at once when the latest observations' rate exceeds the earlier ones' in the trend window by
this many standard errors (Poisson): a 5x spike does at the first observation after it, noise about never."""
TREND_CAP = 1.0
"""The trend may at most double the current rate within one horizon (one noisy sample must not buy a fleet)."""
TREND_SIGNIFICANCE = 1.0
"""Only the part of the slope beyond this many standard errors counts: Poisson noise in two minutes of samples
is not a trend (its slope's error, stretched over a 218 s cold start, is worth a replica)."""
PERIOD_LAGS = (*range(5, 121), 1440)
"""Candidate periods in minutes: 5 minutes to 2 hours, and a day."""
HEADROOM_MIN_TAIL = 0.3
"""The headroom lets 1 - attainment of the requests be late only once the history holds HEADROOM_MIN_TAIL / (1 -
attainment) minutes of rises (30 at 0.99); before that (a new deployment, a restarted operator) a few minutes of
calm would price the tail at nothing, and the headroom is the largest rise seen."""
PERIOD_MIN_CORRELATION = 0.6
PERIOD_MIN_PAIRS = 20
"""Pairs of minute-to-minute changes a lag's correlation needs to count: over fewer, its standard error (about
one over the square root of the pairs) lets two random surges line up as a period."""
FLAT = 1e-9
"""Changes whose variance is below this share of their squares are constant (a steady ramp): what is left of it
is rounding, and a correlation of rounding errors is no period."""
SERVICE_DECAY = 0.99
KV_MIN_IN_USE = 0.05
"""An observation tells how many sequences a KV cache holds only while this much of a cache is in use."""
KV_MIN_SEEN = 5.0
"""KV cache use (in whole caches, summed over observations) after which the learnt sequences per replica count."""
SERVICE_MIN_FINISHED = 200.0
"""Requests that must have finished on busy replicas before their service time replaces the plan's estimate
(fewer are a transient: the short answers finish first, and Little's law needs a steady state)."""


@dataclass(frozen=True)
class Slo:
    """The objective: time to first token at most `ttft` seconds for `attainment` of requests."""

    ttft: float
    attainment: float


@dataclass(frozen=True)
class Forecast:
    """What SLO mode remembers of the arrivals."""

    buckets: Sequence[float] = ()
    """Arrivals per second, one value per `BUCKET_SECONDS`, oldest first; kept as an array of doubles (8 bytes a
    minute, where a tuple of floats takes 32: two days of history are 23 kB per deployment, not 92), never changed
    in place."""
    bucket_start: float | None = None
    bucket_count: float = 0.0
    recent: tuple[tuple[float, float], ...] = ()
    """(time, arrivals per second) of each observation within `TREND_SECONDS`."""
    last_time: float | None = None
    busy_request_seconds: float = 0.0
    busy_finished: float = 0.0
    """Request-seconds run and requests finished while busy, decayed by `SERVICE_DECAY` per observation: their
    ratio is a request's service time on a busy replica (Little's law)."""
    full_request_seconds: float = 0.0
    full_finished: float = 0.0
    """The same while the replicas were nearly full (the policy's `FULL_OCCUPANCY`): a fuller replica decodes
    a bigger batch, each request more slowly, and capacity is planned for full replicas."""
    kv_sums: tuple[float, float] = (0.0, 0.0)
    """Sequences running and KV cache in use (summed over replicas, 1.0 = one replica's cache), decayed by
    `SERVICE_DECAY` per observation while the caches were in use: their ratio is the sequences one replica's KV
    cache holds at the requests' actual lengths."""
    period: int | None = None
    """The recurring pattern's period in buckets, if one was found."""
    headroom_by_horizon: tuple[tuple[int, float, float], ...] = ()
    """(horizon in buckets, quantile, headroom in requests/s), recomputed when a bucket closes."""

    def __post_init__(self) -> None:
        if not isinstance(self.buckets, array):
            object.__setattr__(self, "buckets", array("d", self.buckets))

    def observe(
        self,
        now: float,
        arrivals: float | None,
        finished: float,
        running: float,
        busy: bool,
        full: bool = False,
        kv_total: float | None = None,
    ) -> Forecast:
        """The forecast after one more observation (arrivals and finished since the previous one).

        The service time is learnt only while the replicas are `busy` (a share of their concurrency in use, the
        policy's `BUSY_OCCUPANCY`): a lightly loaded replica finishes sooner than a full one, and capacity is
        planned for full ones.
        """
        if self.last_time is None or arrivals is None or now <= self.last_time:
            return replace(self, last_time=now)
        dt = now - self.last_time
        rate = max(0.0, arrivals) / dt
        recent = (*((t, r) for t, r in self.recent if now - t < TREND_SECONDS), (now, rate))
        seconds, done = self.busy_request_seconds, self.busy_finished
        if busy:
            seconds, done = seconds * SERVICE_DECAY + running * dt, done * SERVICE_DECAY + finished
        full_seconds, full_done = self.full_request_seconds, self.full_finished
        if full:
            full_seconds, full_done = full_seconds * SERVICE_DECAY + running * dt, full_done * SERVICE_DECAY + finished
        kv_sums = self.kv_sums
        if kv_total is not None and kv_total >= KV_MIN_IN_USE and running > 0:
            kv_sums = (kv_sums[0] * SERVICE_DECAY + running, kv_sums[1] * SERVICE_DECAY + kv_total)
        new = replace(self, last_time=now, recent=recent, busy_request_seconds=seconds, busy_finished=done,
                      full_request_seconds=full_seconds, full_finished=full_done, kv_sums=kv_sums)  # fmt: skip
        if self.bucket_start is None:
            return replace(new, bucket_start=now - dt, bucket_count=arrivals)
        count = self.bucket_count + arrivals
        span = now - self.bucket_start
        if span < BUCKET_SECONDS:
            return replace(new, bucket_count=count)
        closed = int(span // BUCKET_SECONDS)
        buckets = array("d", self.buckets)
        buckets.extend([count / span] * closed)
        del buckets[:-HISTORY_BUCKETS]
        return replace(new, buckets=buckets, bucket_start=self.bucket_start + closed * BUCKET_SECONDS,
                       bucket_count=0.0, period=detect_period(buckets), headroom_by_horizon=())  # fmt: skip

    def service_seconds(self) -> float | None:
        """Seconds a request runs on a busy replica, once enough have finished."""
        if self.full_finished >= SERVICE_MIN_FINISHED:
            return self.full_request_seconds / self.full_finished
        if self.busy_finished < SERVICE_MIN_FINISHED:
            return None
        return self.busy_request_seconds / self.busy_finished

    def sequences_per_replica(self) -> float | None:
        """Sequences one replica's KV cache holds at the lengths its requests actually have (running over KV cache
        in use), once the caches were used enough to tell; None before."""
        running, used = self.kv_sums
        return running / used if used >= KV_MIN_SEEN else None

    def without_replica_learning(self) -> Forecast:
        """The same arrivals, with what was learnt of a replica (service time, KV cache) forgotten: for a new plan
        (another model, GPU, parallelism or batch), whose replicas hold and run requests differently."""
        return replace(self, busy_request_seconds=0.0, busy_finished=0.0, full_request_seconds=0.0,
                       full_finished=0.0, kv_sums=(0.0, 0.0))  # fmt: skip

    def rate(self) -> float:
        """Arrivals per second over the trend window."""
        return sum(r for _, r in self.recent) / len(self.recent) if self.recent else 0.0

    def level(self) -> float:
        """The arrival rate now: over the trend window, unless its latest observations stand above the ones before
        them by more than `LEVEL_RISE_SIGMAS` Poisson standard errors (a step up, which the window's mean shows
        only over two minutes); then over those latest observations, from where the step is clearest."""
        rate = self.rate()
        times = [t for t, _ in self.recent]
        if len(times) < 3:
            return rate
        counts = [r * (t - before) for (before, _), (t, r) in itertools.pairwise(self.recent)]
        best, level = LEVEL_RISE_SIGMAS, rate
        after, total = 0.0, sum(counts)
        for k in range(1, len(counts)):  # the last k observations against the ones before them
            after += counts[-k]
            before = total - after
            span_after, span_before = times[-1] - times[-k - 1], times[-k - 1] - times[0]
            if span_before <= 0 or span_after <= 0:
                continue
            now_rate, then_rate = after / span_after, before / span_before
            error = math.sqrt(max(after, 1.0) / span_after**2 + max(before, 1.0) / span_before**2)
            z = (now_rate - then_rate) / error
            if z > best:
                best, level = z, now_rate
        return max(rate, level)

    def trend_rate(self, horizon: float) -> float:
        """The rate `horizon` seconds ahead if the recent rise continues (never below the current rate)."""
        now_rate = self.rate()
        if len(self.recent) < 3:
            return now_rate
        ts = [t for t, _ in self.recent]
        mean_t = sum(ts) / len(ts)
        var_t = sum((t - mean_t) ** 2 for t in ts)
        if var_t <= 0:
            return now_rate
        mean_r = sum(r for _, r in self.recent) / len(self.recent)
        slope = sum((t - mean_t) * r for t, r in self.recent) / var_t
        residual = sum((r - mean_r - slope * (t - mean_t)) ** 2 for t, r in self.recent) / (len(self.recent) - 2)
        significant = slope - TREND_SIGNIFICANCE * math.sqrt(residual / var_t)
        return now_rate + min(max(0.0, significant) * horizon, TREND_CAP * now_rate)

    def recurring_rate(self, horizon: float) -> float:
        """The highest rate seen one (and two) periods ago in the minutes from now to `horizon` ahead; 0 without a
        period."""
        if self.period is None:
            return 0.0
        into = (
            self.last_time - self.bucket_start if self.last_time is not None and self.bucket_start is not None else 0.0
        )
        n, p = len(self.buckets), self.period
        h = math.floor((into + horizon) / BUCKET_SECONDS)  # the buckets `horizon` reaches from where we are in this one
        past = [self.buckets[i] for back in (p, 2 * p) for i in range(n - back, n - back + h + 1) if 0 <= i < n]
        return max(past, default=0.0)

    def headroom(self, horizon: float, attainment: float) -> float:
        """Rate headroom for `attainment` against rises within `horizon` (see `rise_headroom`)."""
        h = max(1, math.ceil(horizon / BUCKET_SECONDS))
        for hh, q, value in self.headroom_by_horizon:
            if hh == h and q == attainment:
                return value
        return rise_headroom(self.buckets, h, attainment, self.period)

    def with_headroom_cached(self, horizon: float, attainment: float) -> Forecast:
        """The same forecast with the headroom for (horizon, attainment) remembered until the next bucket closes."""
        h = max(1, math.ceil(horizon / BUCKET_SECONDS))
        if any(hh == h and q == attainment for hh, q, _ in self.headroom_by_horizon):
            return self
        value = rise_headroom(self.buckets, h, attainment, self.period)
        return replace(self, headroom_by_horizon=(*self.headroom_by_horizon, (h, attainment, value)))


def rise_headroom(buckets: Sequence[float], h: int, attainment: float, period: int | None) -> float:
    """The least rate headroom H for which the arrivals a fleet sized `h` buckets earlier would meet too late
    stay within 1 - `attainment` of all arrivals in `buckets`.

    A minute's excess is its rate beyond the rate `h` buckets before it (with a period: beyond the larger of
    that and the same window one period earlier, the recurring forecast then), less the Poisson noise of two
    minute counts (z at `attainment`), which the staffing covers already. H absorbs up to H of each minute's
    excess; the rest is late: sum(max(0, excess - H)) <= (1 - attainment) x sum(rates).
    """
    z = NormalDist().inv_cdf(min(max(attainment, 0.5), 0.9999))
    excess: list[float] = []
    for j in range(h, len(buckets)):
        if period is not None and j - h - period + 1 < 0:
            continue
        base = buckets[j - h]
        if period is not None:
            base = max(base, *buckets[j - h - period + 1 : j - period + 2])
        rise = buckets[j] - base - z * math.sqrt(2 * max(base, 0.0) / BUCKET_SECONDS)
        if rise > 0:
            excess.append(rise)
    allowed = (1.0 - attainment) * sum(buckets)
    excess.sort(reverse=True)
    if len(buckets) - h < HEADROOM_MIN_TAIL / (1.0 - attainment):
        return excess[0] if excess else 0.0  # too short a history to know its tail: the largest rise seen
    total = 0.0
    for k, value in enumerate(excess):
        total += value
        below = excess[k + 1] if k + 1 < len(excess) else 0.0
        if total - (k + 1) * below > allowed:  # H lies between `below` and `value`
            return max(0.0, (total - allowed) / (k + 1))
    return 0.0


def detect_period(buckets: Sequence[float]) -> int | None:
    """The shortest lag (in buckets) at which the changes correlate above `PERIOD_MIN_CORRELATION`, seen twice and
    over at least `PERIOD_MIN_PAIRS` pairs.

    Runs whenever a minute closes, over up to two days of minutes and 117 lags: the sums and sums of squares of
    each lag's two windows come from running totals, and only the cross products are summed per lag (in C, by
    `map`), about 8 ms at a full history where the textbook loop took 80."""
    diffs = [b - a for a, b in itertools.pairwise(buckets)]
    n = len(diffs)
    total = [0.0, *itertools.accumulate(diffs)]
    squares = [0.0, *itertools.accumulate(d * d for d in diffs)]
    best: tuple[float, int] | None = None
    for lag in PERIOD_LAGS:
        if 2 * lag > len(buckets):
            break
        pairs = n - lag
        if pairs < max(PERIOD_MIN_PAIRS, 3):
            continue
        later, earlier = total[n] - total[lag], total[pairs]  # sums of diffs[lag:] and diffs[:pairs]
        sxx = squares[n] - squares[lag] - later * later / pairs
        syy = squares[pairs] - earlier * earlier / pairs
        sxy = sum(map(operator.mul, diffs[lag:], diffs[:pairs])) - later * earlier / pairs
        varies = sxx > FLAT * (squares[n] - squares[lag]) and syy > FLAT * squares[pairs]  # else rounding only
        corr = sxy / math.sqrt(sxx * syy) if varies else 0.0
        if corr >= PERIOD_MIN_CORRELATION and (best is None or corr > best[0] + 0.05):
            best = (corr, lag)
    return None if best is None else best[1]


@dataclass(frozen=True)
class Sized:
    """SLO mode's replica count and a short account of it."""

    replicas: int
    why: str
    keep: int = 0
    """Replicas to keep before scaling down: the same staffing over the longer horizon (see `slo_replicas`)."""


TYPICAL_OUTPUT_TOKENS = 256


def plan_replica_rate(decode_tokens_per_second: float) -> float:
    """Requests per second one replica serves by the plan's estimate (typical answers of 256 tokens)."""
    return decode_tokens_per_second / TYPICAL_OUTPUT_TOKENS


def slo_replicas(
    forecast: Forecast,
    slo: Slo,
    cold_start: float,
    concurrency: int,
    replica_rate: float,
    waiting: float,
    keep_horizon: float = 0.0,
) -> Sized:
    """Replicas that meet `slo` one cold start from now; `keep` also covers the trend and the recurring load
    `keep_horizon` seconds further on, and the rate's measurement error (a replica released now and needed
    again within the scale-down delay would flap)."""
    service = forecast.service_seconds()
    capacity = concurrency / service if service else replica_rate
    if capacity <= 0:
        return Sized(0, "no capacity estimate")
    trend = forecast.trend_rate(cold_start)
    recurring = forecast.recurring_rate(cold_start)
    headroom = forecast.headroom(cold_start, slo.attainment)
    # the trend and the headroom are two answers to the same question (how far may the rate rise within a cold
    # start): the rises the headroom was sized on include the trends of the past, so they are not added up
    now_rate = forecast.level()
    base = max(now_rate, recurring)
    if recurring >= now_rate:
        # a rise the period foresees: the period says where it ends, and the trend of a step's first minute
        # (the two-minute mean still climbing) would carry it on to double
        trend = min(trend, base + headroom)
    expected = max(trend, base + headroom)
    z = NormalDist().inv_cdf(min(max(slo.attainment, 0.5), 0.9999))
    by_rate = staffed(expected, concurrency / capacity, concurrency, z)
    by_backlog = math.ceil((now_rate + waiting / slo.ttft) / capacity) if waiting > 0 else 0
    source = f"recurring load (period {forecast.period} min)" if recurring > now_rate else "rate"
    why = (f"{source} {base:.2f}/s + headroom {headroom:.2f}/s, or trend {trend:.2f}/s, at "
           f"{capacity:.2f}/s per replica of {concurrency} sequences")  # fmt: skip
    ahead = cold_start + keep_horizon
    kept = max(expected, forecast.trend_rate(ahead), max(now_rate, forecast.recurring_rate(ahead)) + headroom)
    kept += z * math.sqrt(kept / TREND_SECONDS)  # the measured rate's own Poisson error: hysteresis
    keep = staffed(kept, concurrency / capacity, concurrency, z)
    return Sized(max(by_rate, by_backlog), why, keep)


def staffed(rate: float, service: float, concurrency: float, z: float) -> int:
    """Replicas whose `concurrency` holds what `rate` keeps in flight: rate x `service` requests on average
    (Little's law), plus `z` standard deviations of that count (Poisson arrivals keep a Poisson number in
    flight, whatever the service times: square-root staffing). Big fleets need relatively less spare."""
    if rate <= 0:
        return 0
    load = rate * service
    return math.ceil((load + z * math.sqrt(load)) / concurrency)
