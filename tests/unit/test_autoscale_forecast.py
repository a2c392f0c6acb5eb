"""SLO mode's forecast and sizing, table by table, and the policy in SLO mode."""

from __future__ import annotations

import random
import sys
from array import array
from dataclasses import replace
from statistics import NormalDist

import pytest

from qwenfleet.autoscale.forecast import (
    BUCKET_SECONDS,
    Forecast,
    Slo,
    detect_period,
    rise_headroom,
    slo_replicas,
    staffed,
)
from qwenfleet.autoscale.loop import arrivals_since
from qwenfleet.autoscale.policy import Observation, Settings, State, decide, level_dropped, slo_concurrency
from qwenfleet.enginemetrics.parse import parse

SLO = Slo(ttft=2.5, attainment=0.99)
Z99 = NormalDist().inv_cdf(0.99)
_NOISE = Z99 * (2 * 1.0 / 60) ** 0.5
"""z at 0.99 times the standard deviation of the difference of two minute counts at 1/s, in requests/s."""


def _square(period: int, on: int, n: int, low: float = 1.0, high: float = 30.0) -> tuple[float, ...]:
    return tuple(high if i % period < on else low for i in range(n))


@pytest.mark.parametrize(
    ("buckets", "period"),
    [
        (_square(30, 10, 61), 30),  # two full periods of 10 on / 20 off
        (_square(30, 10, 59), None),  # not yet seen twice
        (_square(12, 3, 100), 12),
        (_square(8, 2, 27), None),  # seen three times, but over 18 pairs of changes: two surges may line up
        (_square(8, 2, 29), 8),
        (tuple(5.0 for _ in range(200)), None),  # steady
        (tuple(float(i) for i in range(200)), None),  # a ramp is a trend, not a period
        (tuple(0.1 * i + 0.7 for i in range(2880)), None),  # even where its steps differ by rounding only
        (tuple(5.0 + random.Random(7).random() for _ in range(200)), None),  # noise without a pattern
    ],
)
def test_detect_period(buckets: tuple[float, ...], period: int | None) -> None:
    assert detect_period(buckets) == period


_Z999 = NormalDist().inv_cdf(0.999)


@pytest.mark.parametrize(
    ("buckets", "h", "attainment", "period", "expected"),
    [
        ((1.0, 1.0, 1.0, 1.0), 1, 0.99, None, 0.0),  # nothing rises
        # one jump of 4 (less the noise of 1/s) in 46 requests/s of history: all but 1% of 46 must be covered
        ((1.0, 5.0) + (1.0,) * 40, 1, 0.99, None, 4.0 - _NOISE - 0.46),
        # five minutes are too few to judge which 1% may be late (30 are needed at 0.99): the largest rise
        ((1.0, 5.0, 1.0, 1.0, 1.0), 1, 0.99, None, 4.0 - _NOISE),
        ((1.0, 5.0, 1.0, 1.0, 1.0), 1, 0.5, None, 0.0),  # half of all requests may be late: no headroom
        ((1.0, 1.0, 5.0) + (1.0,) * 40, 2, 0.99, None, 4.0 - _NOISE - 0.47),  # against the rate two buckets before
        ((100.0, 103.0, 100.0, 104.0), 1, 0.99, None, 0.0),  # 100/s varies by 3-4/s per minute: noise
        ((100.0, 140.0) + (100.0,) * 30, 1, 0.99, None, 40.0 - Z99 * (200 / 60) ** 0.5 - 32.4),  # a real rise
        (_square(4, 1, 40), 1, 0.99, 4, 0.0),  # the period's forecast already holds every rise
        # a rare short surge in a long busy history weighs as its requests do: 0.99 lets 10.2 of them be late
        ((10.0,) * 99 + (30.0,), 1, 0.99, None, 20.0 - Z99 * (20 / 60) ** 0.5 - 10.2),
        # 0.999 judges a 0.1% tail only from 300 minutes on: until then, the largest rise
        ((10.0,) * 99 + (30.0,), 1, 0.999, None, 20.0 - _Z999 * (20 / 60) ** 0.5),
        ((10.0,) * 399 + (30.0,), 1, 0.999, None, 20.0 - _Z999 * (20 / 60) ** 0.5 - 4.02),
    ],
)
def test_rise_headroom(
    buckets: tuple[float, ...], h: int, attainment: float, period: int | None, expected: float
) -> None:
    assert rise_headroom(buckets, h, attainment, period) == pytest.approx(expected)


def test_rise_headroom_covers_the_larger_rises_first() -> None:
    # rises of 10 and 2 (noise aside) in a history of 1/s: the headroom is set by the larger, shared by both
    buckets = (1.0, 11.0, 1.0, 3.0) + (1.0,) * 96
    total = sum(buckets)
    big, small = 10.0 - _NOISE, 2.0 - _NOISE
    h = rise_headroom(buckets, 1, 0.99, None)
    assert h == pytest.approx(big - 0.01 * total)  # the small rise fits under it
    assert small < h < big
    z90 = NormalDist().inv_cdf(0.9) * (2 * 1.0 / 60) ** 0.5
    assert rise_headroom(buckets, 1, 0.9, None) == pytest.approx((10.0 - z90 + 2.0 - z90 - 0.1 * total) / 2)


def _fed(rates: list[float], every: float = 10.0, running: float = 0.0, busy: bool = False) -> Forecast:
    f = Forecast().observe(0.0, None, 0.0, 0.0, False)
    t = 0.0
    for r in rates:
        t += every
        f = f.observe(t, r * every, r * every if busy else 0.0, running, busy)
    return f


def test_rate_buckets_and_trend() -> None:
    f = _fed([2.0] * 12)
    assert f.rate() == pytest.approx(2.0)
    assert f.buckets == pytest.approx((2.0, 2.0))  # 120 s = two minute buckets
    assert f.trend_rate(100) == pytest.approx(2.0)  # flat: no trend
    rising = _fed([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert rising.trend_rate(30) > rising.rate()
    assert rising.trend_rate(10_000) == pytest.approx(2 * rising.rate())  # capped at double


def test_unknown_arrivals_change_nothing_but_time() -> None:
    f = _fed([3.0] * 6)
    g = f.observe(70.0, None, 0.0, 0.0, False)
    assert g.recent == f.recent and g.buckets == f.buckets and g.last_time == 70.0


def test_service_time_learnt_only_when_busy() -> None:
    idle = _fed([1.0] * 60, running=2.0, busy=False)
    assert idle.service_seconds() is None
    busy = _fed([1.0] * 60, running=20.0, busy=True)  # 20 running at 1 finished/s: 20 s each (Little)
    assert busy.service_seconds() == pytest.approx(20.0)


def test_recurring_rate_prewarms_one_period_later() -> None:
    f = Forecast(buckets=_square(30, 10, 60 + 28), period=30)  # 2 minutes before the next burst
    assert f.recurring_rate(horizon=3 * BUCKET_SECONDS) == 30.0
    assert f.recurring_rate(horizon=0.0) == 1.0  # too far ahead to matter yet
    assert Forecast(buckets=_square(30, 10, 88)).recurring_rate(600) == 0.0  # no period, no recurrence


@pytest.mark.parametrize(
    ("forecast", "waiting", "replica_rate", "expected"),
    [
        (_fed([8.5] * 3), 0.0, 1.0, 11),  # 136 in flight + 2.33 x sqrt(136) = 163 over 16 slots each
        (_fed([8.5] * 3), 0.0, 2.0, 6),  # 68 + 2.33 x sqrt(68) = 87
        (_fed([0.0] * 3), 0.0, 1.0, 0),
        (_fed([1.0] * 3), 25.0, 1.0, 11),  # backlog: (1 + 25 / 2.5) / 1 per replica
        (Forecast(buckets=_square(30, 10, 88), period=30), 0.0, 10.0, 5),  # 30/s recurs: 48 + 16 in flight
    ],
)
def test_slo_replicas(forecast: Forecast, waiting: float, replica_rate: float, expected: int) -> None:
    assert slo_replicas(forecast, SLO, 120.0, 16, replica_rate, waiting).replicas == expected


@pytest.mark.parametrize(
    ("rates", "every", "expected"),
    [
        ([2.0] * 12, 10.0, 2.0),  # steady: the window's mean
        ([2.0, 2.6, 1.5, 2.2, 1.8, 2.4, 1.6, 2.0, 2.3, 1.7, 2.1, 2.9], 10.0, None),  # noise: the window's mean
        ([1.2] * 11 + [6.0], 10.0, 6.0),  # a 5x step, 10 s ago: its level at once, not the mean's 1.6
        ([1.2] * 9 + [6.0] * 3, 10.0, 6.0),  # the step 30 s ago: the 30 s since it
        ([0.1] * 11 + [0.4], 10.0, None),  # 4 requests where 1 was expected: not beyond noise
        ([0.0] * 11 + [0.3], 10.0, None),  # 3 requests after none: not a level either
        ([1.2] * 119 + [6.0], 1.0, None),  # one second at 6/s, 6 requests: noise at 1.2/s
        ([1.2] * 110 + [6.0] * 10, 1.0, 6.0),  # ten seconds at 6/s, observed every second
    ],
)
def test_a_step_up_counts_at_once(rates: list[float], every: float, expected: float | None) -> None:
    f = _fed(rates, every)
    assert f.level() == pytest.approx(f.rate() if expected is None else expected, rel=0.02)


def test_a_step_up_is_met_at_the_first_decision_after_it() -> None:
    """A spike from 1.2/s to 6/s: the first decision after it sizes for 6/s (the two-minute mean says 1.6)."""
    s = replace(S, cold_start=39.0)
    state = State(desired=2)
    t = 0.0
    for k in range(14):
        t = 10.0 * k
        rate = 6.0 if k == 13 else 1.2
        obs = Observation(ready=2, waiting=0.0, running=rate * 10, kv_usage=0.2, active=True, arrivals=rate * 10,
                          finished=rate * 10)  # fmt: skip
        decision = decide(t, obs, s, state)
        state = decision.state
    assert state.forecast.rate() < 2.0
    assert decision.desired >= staffed(6.0, 16.0, 16, Z99) > staffed(2.0, 16.0, 16, Z99)  # 16 s per request
    assert "rate 6.00/s" in decision.reason


def test_trend_and_headroom_are_alternatives_not_added() -> None:
    # rises of 4/s within a minute were seen (headroom ~3.6/s), and the rate now climbs by 3/s a minute (trend)
    history = (1.0, 5.0) * 30
    f = replace(_fed([4.0 + i / 2 for i in range(12)]), buckets=history)
    trend, headroom = f.trend_rate(60.0), f.headroom(60.0, 0.99)
    assert trend > f.level() + 1 and headroom > 3
    sized = slo_replicas(f, SLO, 60.0, 16, 1.0, 0.0)
    assert sized.replicas == staffed(max(trend, f.level() + headroom), 16.0, 16, Z99)
    assert sized.replicas < staffed(trend + headroom, 16.0, 16, Z99)


def test_a_recurring_rise_is_not_extrapolated_beyond_what_recurs() -> None:
    # the load recurs every 30 minutes at 30/s, and a burst's first minute is under way: the two-minute mean
    # climbs steeply, a trend that would double it; the period says the rise ends at 30/s
    recent = tuple((float(t), 1.0 if t < 60 else 30.0) for t in range(0, 120, 10))
    f = Forecast(buckets=(*_square(30, 10, 89, low=1.0, high=30.0)[1:], 1.0), recent=recent, period=30,
                 bucket_start=5340.0, last_time=5399.0)  # fmt: skip
    assert f.trend_rate(120.0) > 30.0 and f.recurring_rate(120.0) == 30.0
    sized = slo_replicas(f, SLO, 120.0, 16, 10.0, 0.0)
    assert sized.replicas == staffed(30.0 + f.headroom(120.0, SLO.attainment), 1.6, 16, Z99)
    without_period = slo_replicas(replace(f, period=None), SLO, 120.0, 16, 10.0, 0.0)
    assert without_period.replicas > sized.replicas  # no period: the trend is all there is to go on


def test_higher_attainment_keeps_more_headroom() -> None:
    spiky = (1.0,) * 20 + (20.0,) + (1.0,) * 13 + (20.0,) + (1.0,) * 27  # two rises in 62 minutes, not periodic
    f = Forecast(buckets=spiky, recent=((0.0, 1.0),))
    low = slo_replicas(f, Slo(2.5, 0.5), 60.0, 16, 1.0, 0.0).replicas
    high = slo_replicas(f, Slo(2.5, 0.999), 60.0, 16, 1.0, 0.0).replicas
    assert high > low >= 1


S = Settings(min_replicas=1, max_replicas=20, target_queue=4, scale_down_delay=300, idle_to_zero=900,
             concurrency=16, slo=SLO, cold_start=120.0, replica_rate=1.0)  # fmt: skip


def _obs(arrivals: float, running: float = 4.0, ready: int = 1) -> Observation:
    return Observation(ready=ready, waiting=0.0, running=running, kv_usage=0.1, active=True, arrivals=arrivals)


def test_slo_mode_scales_up_before_the_queue_grows() -> None:
    state = State(desired=1)
    queue_only = Settings(**{**S.__dict__, "slo": None})
    q_state = State(desired=1)
    reasons = []
    for t in range(0, 60, 10):
        d = decide(float(t), _obs(arrivals=50.0), S, state)  # 5/s, no queue yet
        state = d.state
        reasons.append(d.reason)
        q_state = decide(float(t), _obs(arrivals=50.0), queue_only, q_state).state
    assert q_state.desired == 1  # four running, nothing waiting: the queue target sees no need
    assert state.desired == 7 and any("for the SLO" in r for r in reasons)  # 80 in flight + 2.33 x sqrt(80)


def test_slo_mode_prewarms_a_recurring_burst_and_scales_down_after() -> None:
    state = State(desired=1)
    t = 0.0
    desired_at: dict[int, int] = {}
    for _ in range(5 * 180):  # 5 periods of 30 minutes: 10 on at 12/s, 20 off at 0.5/s, one tick per 10 s
        minute = int(t // 60)
        rate = 12.0 if minute % 30 < 10 else 0.5
        d = decide(t, _obs(arrivals=rate * 10, running=min(16.0, rate * 4), ready=state.desired), S, state)
        state = d.state
        desired_at[int(t)] = d.desired
        t += 10
    burst = 4 * 1800  # the fifth burst starts here
    assert desired_at[burst - 10] >= 12  # warm before the load arrives (12/s at 1/s per replica, plus noise)
    assert desired_at[burst - 600] <= 3  # and not kept warm all the quiet time


@pytest.mark.parametrize(("into", "expected"), [(10.0, 1.0), (30.0, 50.0)])
def test_the_recurring_load_is_read_as_far_ahead_as_the_horizon_reaches(into: float, expected: float) -> None:
    # one period (10 minutes) ago, the minute after this one was busy: a 39 s cold start 10 s into this minute
    # ends within it (nothing to warm yet), 30 s into it the cold start reaches the next minute
    buckets = tuple(50.0 if i == 21 else 1.0 for i in range(30))
    f = Forecast(buckets=buckets, period=10, bucket_start=1800.0, last_time=1800.0 + into)
    assert f.recurring_rate(39.0) == expected


@pytest.mark.parametrize(
    ("before", "now", "dropped"),
    [
        (12.0, 0.5, True),  # a burst's end
        (12.0, 11.0, False),  # within the noise of two 2-minute estimates (sd 0.45/s)
        (12.0, 9.0, True),  # 6.7 standard errors
        (0.1, 0.0, False),  # too few requests to tell
        (5.0, 6.0, False),  # a rise is never a drop
    ],
)
def test_a_level_drop_is_beyond_the_noise(before: float, now: float, dropped: bool) -> None:
    assert level_dropped(before, now) is dropped


def _after_burst(settings: Settings) -> dict[int, int]:
    """Desired replicas, per second after the burst's end, of a fleet that served 12/s for 10 minutes."""
    state = State(desired=1)
    desired_at: dict[int, int] = {}
    for tick in range(180):  # 10 minutes at 12/s, then 20 at 0.5/s
        t = 10.0 * tick
        rate = 12.0 if tick < 60 else 0.5
        in_flight, slots = rate * 4, 16.0 * state.desired
        obs = Observation(ready=state.desired, waiting=max(0.0, in_flight - slots), running=min(slots, in_flight),
                          kv_usage=0.5, active=True, arrivals=rate * 10)  # fmt: skip
        state = decide(t, obs, settings, state).state
        desired_at[int(t) - 600] = state.desired
    return desired_at


def test_slo_mode_releases_a_finished_burst_without_waiting_out_the_delay() -> None:
    # the burst's rate is far beyond what is left: SLO mode's keep decides at once (two minutes for the measured
    # rate to fall, one replica per decision); queue mode holds the burst's recommendation for the whole delay
    slo_mode = _after_burst(S)
    queue_mode = _after_burst(Settings(**{**S.__dict__, "slo": None}))
    assert slo_mode[-10] >= 12 and queue_mode[-10] >= 2
    assert slo_mode[240] <= 2
    assert queue_mode[240] == queue_mode[-10]  # still held 4 minutes after the burst


@pytest.mark.parametrize(("now", "expected"), [(3595.0, 4), (3600.0, 3)])
def test_recommendations_made_before_a_period_was_found_are_not_held(now: float, expected: int) -> None:
    # 30/s for 10 minutes in every 30, 1/s otherwise; 59 minutes seen, and the next burst is 10 minutes away.
    # Without a period, the headroom held a burst's worth of replicas (4) through the last five minutes. The
    # observation at 3600 s closes the 60th minute: the period is found, the burst is foreseen rather than held
    # for, and the old recommendations go with the old forecast (scale-down starts); at 3595 s nothing changed
    pattern = tuple(30.0 if 10 <= i % 30 < 20 else 1.0 for i in range(59))
    recent = tuple((3480.0 + 10 * k, 1.0) for k in range(12))
    f = Forecast(buckets=pattern, bucket_start=3540.0, bucket_count=50.0, recent=recent, last_time=3590.0)
    window = tuple((3590.0 - 10 * k, 4, 1.0) for k in range(29))
    state = State(desired=4, started=0.0, recommendations=window, forecast=f)
    obs = Observation(ready=4, waiting=0.0, running=2.0, kv_usage=0.1, active=True, arrivals=now - 3590.0)
    d = decide(now, obs, Settings(**{**S.__dict__, "replica_rate": 10.0}), state)
    assert (d.state.forecast.period is not None) is (now == 3600.0)
    assert d.desired == expected


def test_slo_mode_learns_what_a_kv_cache_holds_at_the_actual_lengths() -> None:
    # the plan says 16 sequences per replica (2,048-token requests); these requests are shorter: 40 run on two
    # replicas whose caches are each 62.5% used, so a cache holds 32. The staffing and the queue rule use 32
    settings = Settings(**{**S.__dict__, "max_num_seqs": 256})
    state = State(desired=2, started=0.0)
    for tick in range(12):
        obs = Observation(ready=2, waiting=0.0, running=40.0, kv_usage=0.625, active=True, arrivals=20.0,
                          finished=20.0, kv_total=1.25)  # fmt: skip
        state = decide(10.0 * tick, obs, settings, state).state
    assert state.forecast.sequences_per_replica() == pytest.approx(32.0)
    assert slo_concurrency(state.forecast, settings) == 32
    assert slo_concurrency(state.forecast, Settings(**{**S.__dict__, "max_num_seqs": 24})) == 24  # vLLM's cap
    assert slo_concurrency(Forecast(), settings) == 16  # nothing seen yet: the plan's figure


def test_arrivals_from_pod_counters() -> None:
    text = ("vllm:request_success_total 10\nvllm:num_requests_running 3\nvllm:num_requests_waiting 1\n"
            "vllm:generation_tokens_total 100\nvllm:kv_cache_usage_perc 0.2\n")  # fmt: skip
    sample = parse(text)
    assert sample.finished == 10.0
    # the pod finished 4 more and holds 2 more than before: 6 arrived; a new pod counts from zero
    arrived, finished = arrivals_since({"10.0.0.1": (6.0, 2.0)}, {"10.0.0.1": sample, "10.0.0.2": sample})
    assert (arrived, finished) == (6.0 + 14.0, 4.0 + 10.0)


def test_keep_covers_the_recurring_load_within_the_scale_down_delay() -> None:
    f = Forecast(buckets=_square(30, 10, 60 + 24), period=30, recent=((0.0, 1.0),))  # burst 6 minutes away
    sized = slo_replicas(f, SLO, 60.0, 16, 10.0, 0.0, keep_horizon=300.0)
    assert sized.replicas == 1  # not needed one cold start ahead yet
    assert sized.keep == 5  # but a replica released now would be asked for again within the delay


@pytest.mark.parametrize(
    ("rate", "service", "slots", "z", "expected"),
    [
        (0.0, 20.0, 16, 2.33, 0),  # nothing arrives
        (1.0, 16.0, 16, 0.0, 1),  # 16 in flight on average fill one replica exactly
        (1.0, 16.0, 16, 2.33, 2),  # 16 + 2.33 x 4 = 25.3: a second replica for the noise
        (100.0, 16.0, 16, 2.33, 106),  # 1,600 + 93: big fleets need relatively less spare (6%, not 58%)
        (43.6, 21.2, 256, Z99, 4),  # 235B steady: 924 in flight + 71 fits four 256-sequence replicas
    ],
)
def test_square_root_staffing(rate: float, service: float, slots: int, z: float, expected: int) -> None:
    assert staffed(rate, service, slots, z) == expected


def test_a_trend_counts_only_beyond_its_noise() -> None:
    noisy = _fed([10.0, 12.0, 9.0, 11.0, 8.0, 13.0, 10.0, 9.0, 12.0, 11.0, 10.0, 12.0])  # flat, Poisson-like
    assert noisy.trend_rate(218) == pytest.approx(noisy.rate())
    ramp = _fed([10.0 + i for i in range(12)])  # a clean rise of 0.1/s per second
    assert ramp.trend_rate(60) == pytest.approx(ramp.rate() + 6.0)


def test_service_time_from_nearly_full_replicas_wins() -> None:
    f = Forecast().observe(0.0, None, 0.0, 0.0, False)
    t = 0.0
    for _ in range(30):  # at 40% of the batch: 10 running, 1 finished/s: 10 s each
        t += 10
        f = f.observe(t, 10.0, 10.0, 10.0, True, False)
    assert f.service_seconds() == pytest.approx(10.0)
    for _ in range(30):  # nearly full: 24 running, 2 finished/s: 12 s each (a bigger batch decodes slower)
        t += 10
        f = f.observe(t, 20.0, 20.0, 24.0, True, True)
    assert f.service_seconds() == pytest.approx(12.0)


def test_headroom_is_what_the_surges_requests_weigh_in_the_objective() -> None:
    # a surge from 1/s to 30/s one minute in eight: 80% of the requests arrive in surges, so even 0.8 keeps
    # most of a surge warm; a surge from 10/s to 40/s once in 80 minutes is 4% of the requests: 0.8 needs no
    # headroom, 0.99 most of it. Either way the keep holds what the sizing holds (no rise arrives within the
    # delay that the sizing's own horizon did not price)
    frequent = tuple(30.0 if i % 8 == 4 else 1.0 for i in range(80))
    rare = tuple(40.0 if i == 40 else 10.0 for i in range(80))
    assert Forecast(buckets=frequent).headroom(60.0, 0.8) > 20.0
    assert Forecast(buckets=rare).headroom(60.0, 0.8) == 0.0
    assert Forecast(buckets=rare).headroom(60.0, 0.99) > 15.0
    for buckets in (frequent, rare):
        f = Forecast(buckets=buckets, recent=((0.0, 1.0),))
        sized = slo_replicas(f, Slo(2.5, 0.8), 60.0, 16, 10.0, 0.0, keep_horizon=300.0)
        assert sized.keep <= sized.replicas + 1  # the rate's own error, nothing for rises beyond a cold start


@pytest.mark.parametrize(
    ("slo", "waiting", "expected"),
    [
        (SLO, 0.0, 3),  # SLO mode released a replica 100 s ago; a forecast that rose with nothing waiting holds
        (SLO, 5.0, 5),  # requests waiting take it back at once (65 in flight need 5)
        (None, 0.0, 4),  # queue mode: scale-up stays immediate, as documented
    ],
)
def test_no_scale_up_right_after_a_scale_down_unless_requests_wait(
    slo: Slo | None, waiting: float, expected: int
) -> None:
    settings = Settings(**{**S.__dict__, "slo": slo, "target_queue": 0.0})
    state = State(desired=3, last_scale_down=900.0, started=0.0)
    obs = Observation(ready=3, waiting=waiting, running=60.0, kv_usage=0.5, active=True, arrivals=None)
    d = decide(1000.0, obs, settings, state)
    assert d.desired == expected
    if expected == 3:
        assert d.reason.startswith("holding")


def test_slo_mode_scales_down_to_its_own_sizing_not_the_queue_floor() -> None:
    # 20/s arrive and run 8 s each: 160 in flight. Queue mode keeps ceil(160 / (0.7 x 16)) = 15 replicas; SLO mode
    # sizes 160 + 2.33 x sqrt(160) (and the rate's own error) over 16 slots: 13, and goes there
    t = 0.0
    f = Forecast().observe(0.0, None, 0.0, 0.0, False)
    for _ in range(60):  # the service time, learnt while the replicas were nearly full
        t += 10
        f = f.observe(t, 200.0, 200.0, 160.0, True, True)
    assert f.service_seconds() == pytest.approx(8.0)

    def run(settings: Settings, state: State) -> int:
        for i in range(120):
            obs = Observation(ready=state.desired, waiting=0.0, running=160.0, kv_usage=0.6, active=True,
                              arrivals=200.0, finished=200.0)  # fmt: skip
            state = decide(t + 10 * (i + 1), obs, settings, state).state
        return state.desired

    slo_mode = Settings(**{**S.__dict__, "target_queue": 100.0})
    queue_mode = Settings(**{**slo_mode.__dict__, "slo": None})
    assert run(slo_mode, State(desired=20, started=0.0, forecast=f)) == 13
    assert run(queue_mode, State(desired=20, started=0.0)) == 15


def test_the_history_is_kept_compactly() -> None:
    """Two days of minutes per SLO deployment, at 1,000 deployments: 8 bytes a minute, not a float object each."""
    f = _fed([1.0 + (i % 7) for i in range(400)], every=30.0)
    full = Forecast(buckets=[float(i) for i in range(2880)])
    assert sys.getsizeof(full.buckets) <= 8 * 2880 + 128
    assert isinstance(f.buckets, array)
    assert f.observe(f.last_time + 60.0, 60.0, 0.0, 0.0, False).buckets is not f.buckets  # never changed in place
