"""The builtin autoscaling policy, decision by decision."""

from __future__ import annotations

from qwenfleet.autoscale.policy import Observation, Settings, State, decide, wanted_replicas

S = Settings(min_replicas=0, max_replicas=8, target_queue=4, scale_down_delay=300, idle_to_zero=900, concurrency=16)


def _obs(waiting: float = 0, running: float = 0, ready: int = 1, kv: float = 0.1, **kw: bool) -> Observation:
    return Observation(ready=ready, waiting=waiting, running=running, kv_usage=kv,
                       active=kw.get("active", waiting + running > 0), wake=kw.get("wake", False))  # fmt: skip


def test_wanted_replicas_from_demand_and_kv_pressure() -> None:
    assert wanted_replicas(_obs(running=16, waiting=4), S) == 1
    assert wanted_replicas(_obs(running=16, waiting=30), S) == 3
    assert wanted_replicas(_obs(running=10, waiting=1, kv=0.95), S) == 2
    assert wanted_replicas(_obs(), S) == 0


def test_fast_scale_up_rate_limited() -> None:
    d = decide(0, _obs(running=16, waiting=400), S, State(desired=1))
    assert d.desired == 6 and d.reason.startswith("scale up")  # 1 * 2 + 4
    d = decide(5, _obs(running=16, waiting=400), S, d.state)
    assert d.desired == 8  # capped at maxReplicas


def test_starting_replicas_count_as_capacity() -> None:
    # 3 desired, 1 ready (2 still loading): demand for 3 does not ask for more
    d = decide(0, _obs(running=16, waiting=40, ready=1), S, State(desired=3))
    assert d.desired == 3


def test_scale_down_waits_and_steps_one_at_a_time() -> None:
    state = decide(0, _obs(running=16, waiting=40), S, State(desired=1)).state
    assert state.desired == 3
    t = 10.0
    d = decide(t, _obs(running=2), S, state)
    assert d.desired == 3  # within the scale-down delay of the scale-up
    while d.desired == 3:
        t += 15
        d = decide(t, _obs(running=2), S, d.state)
    assert t >= S.scale_down_delay
    assert d.desired == 2 and d.reason.startswith("scale down")
    d2 = decide(t + 15, _obs(running=2), S, d.state)
    assert d2.desired == 1


def test_no_reversal_inside_the_scale_down_delay() -> None:
    state = State(desired=2)
    t = 0.0
    history = []
    for i in range(200):  # bursty: on for 30 s, off for 30 s
        on = (i // 2) % 2 == 0
        d = decide(t, _obs(running=16 if on else 0, waiting=40 if on else 0, ready=state.desired), S, state)
        history.append((t, d.desired))
        state = d.state
        t += 15
    ups = [t for (t, n), (_, prev) in zip(history[1:], history, strict=False) if n > prev]
    downs = [t for (t, n), (_, prev) in zip(history[1:], history, strict=False) if n < prev]
    for down in downs:
        assert all(not (0 < down - up < S.scale_down_delay) for up in ups)


def test_scale_to_zero_after_idle_and_wake() -> None:
    state = State(desired=1, last_active=0)
    d = decide(899, _obs(active=False), S, state)
    assert d.desired == 1
    d = decide(900, _obs(active=False), S, d.state)
    assert d.desired == 0 and d.reason.startswith("scale to zero")
    d = decide(1000, _obs(ready=0, active=False), S, d.state)
    assert d.desired == 0
    d = decide(1010, _obs(ready=0, active=False, wake=True), S, d.state)
    assert d.desired == 1 and d.reason.startswith("wake")


def test_min_replicas_is_a_floor() -> None:
    s = Settings(min_replicas=2, max_replicas=4, target_queue=4, scale_down_delay=0, idle_to_zero=60, concurrency=16)
    d = decide(10_000, _obs(active=False), s, State(desired=2))
    assert d.desired == 2
    assert decide(0, _obs(), s, State(desired=0)).desired == 2


def test_no_scale_down_before_a_whole_delay_was_observed() -> None:
    # a restarted operator remembers 4 replicas but has no window: it must not drop them on its first look
    d = decide(1000.0, _obs(running=2), S, State(desired=4, last_active=1000.0))
    assert d.desired == 4 and d.reason == "steady"
    t = 1000.0
    while d.desired == 4:
        t += 15
        d = decide(t, _obs(running=2), S, d.state)
    assert t - 1000.0 >= S.scale_down_delay and d.desired == 3
