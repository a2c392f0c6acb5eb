"""SLO mode's memory, checkpointed and restored: what survives an operator restart, and what does not."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from qwenfleet.autoscale import checkpoint
from qwenfleet.autoscale.forecast import BUCKET_SECONDS, HISTORY_BUCKETS, Forecast

PLAN = "Qwen3-4B/bf16/L4-24GB/1/1/64/40960/120000"
WALL = 1_800_000_000.0
"""Seconds since the epoch at the monotonic clock's 0.0 (the forecast's clock)."""


def _periodic(minute: int) -> float:
    """Arrivals per second in `minute`: a 10-minute cycle with three busy minutes."""
    return 30.0 if minute % 10 < 3 else 2.0


def _fed(until: float, start: float = 0.0, every: float = 10.0) -> Forecast:
    """A forecast that observed `_periodic` load from `start` to `until` seconds, every `every` seconds."""
    f = Forecast()
    t = start
    while t <= until:
        f = f.observe(t, _periodic(int((t - every / 2) // 60)) * every, 0.0, 0.0, False)
        t += every
    return f


def _learnt(f: Forecast) -> Forecast:
    return replace(f, busy_request_seconds=900.0, busy_finished=300.0, full_request_seconds=500.0,
                   full_finished=250.0, kv_sums=(200.0, 10.0))  # fmt: skip


def _round_trip(f: Forecast, saved: float, restored: float, plan: str = PLAN) -> Forecast:
    data = checkpoint.to_data(f, PLAN, saved, WALL + saved)
    assert data is not None
    return checkpoint.from_data(data, plan, restored, WALL + restored)


def test_a_restart_within_the_minute_restores_everything() -> None:
    f = _learnt(_fed(45 * 60 + 20))
    assert f.period == 10
    back = _round_trip(f, 45 * 60 + 20, 45 * 60 + 25)
    assert back.buckets == pytest.approx(f.buckets)
    assert back.period == f.period
    assert back.bucket_start == pytest.approx(f.bucket_start)
    assert back.sequences_per_replica() == f.sequences_per_replica() == 20.0
    assert back.service_seconds() == f.service_seconds() == 2.0
    # the 5 s since the checkpoint are guessed from one period ago: 2/s, as observed
    assert back.bucket_count == pytest.approx(f.bucket_count + 2.0 * 5, rel=0.01)


def test_minutes_missed_are_filled_from_the_period_so_the_pattern_stays_in_phase() -> None:
    """Saved at 45:20, restored at 52:40: the forecast knows the burst at 50:00 recurs at 60:00, as the
    forecast that never stopped does."""
    saved, restored = 45 * 60 + 20, 52 * 60 + 40
    back = _round_trip(_fed(saved), saved, restored)
    uninterrupted = _fed(restored)
    assert len(back.buckets) == len(uninterrupted.buckets) == 52
    assert back.buckets[-7:] == pytest.approx(uninterrupted.buckets[-7:], rel=0.02)
    assert back.period == uninterrupted.period == 10
    assert back.bucket_start == pytest.approx(52 * 60)
    for horizon in (60.0, 120.0, 600.0):
        assert back.recurring_rate(horizon) == pytest.approx(uninterrupted.recurring_rate(horizon), rel=0.02)


def test_without_a_period_the_missed_minutes_repeat_the_last_minute() -> None:
    f = Forecast(buckets=(3.0, 4.0, 5.0), bucket_start=180.0, bucket_count=60.0, last_time=200.0)
    back = _round_trip(f, 200.0, 320.0)
    # the minute saved at 20 s in (60 arrivals), then 40 s more at 5/s; then a whole minute like that one
    closed = (60 + 5 * 40) / 60
    assert back.buckets == pytest.approx((3.0, 4.0, 5.0, closed, closed))
    assert back.bucket_start == pytest.approx(300.0)
    assert back.bucket_count == pytest.approx(closed * 20)
    assert back.period is None


def test_another_plan_keeps_the_arrivals_and_forgets_the_replicas() -> None:
    f = _learnt(_fed(45 * 60))
    back = _round_trip(f, 45 * 60, 45 * 60 + 1, plan="Qwen3-4B/bf16/H100-80GB/1/1/256/40960/900000")
    assert back.buckets == pytest.approx(f.buckets)
    assert back.sequences_per_replica() is None
    assert back.service_seconds() is None
    assert f.without_replica_learning().sequences_per_replica() is None
    assert f.without_replica_learning().buckets == f.buckets


def test_a_checkpoint_older_than_the_history_keeps_only_the_replicas() -> None:
    f = _learnt(_fed(45 * 60))
    back = _round_trip(f, 45 * 60, 45 * 60 + (HISTORY_BUCKETS + 2) * BUCKET_SECONDS)
    assert not back.buckets
    assert back.bucket_start is None
    assert back.sequences_per_replica() == 20.0


def test_the_history_stays_within_its_bound() -> None:
    f = Forecast(buckets=(1.0,) * HISTORY_BUCKETS, bucket_start=0.0, last_time=1.0)
    back = _round_trip(f, 1.0, 5 * 60.0)
    assert len(back.buckets) == HISTORY_BUCKETS


def test_nothing_to_save_before_a_minute_started() -> None:
    assert checkpoint.to_data(Forecast(), PLAN, 0.0, WALL) is None


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"forecast.json": "{not json"},
        {"forecast.json": json.dumps({"format": 99})},
        {"forecast.json": json.dumps({"format": 1, "bucketSeconds": 30})},
        {"forecast.json": json.dumps({"format": 1, "bucketSeconds": 60, "arrivalsPerSecond": ["x"]})},
    ],
)
def test_an_unreadable_checkpoint_is_a_fresh_start(data: dict[str, str] | None) -> None:
    assert checkpoint.from_data(data, PLAN, 10.0, WALL) == Forecast()


def test_learnt_sums_must_be_finite() -> None:
    data = checkpoint.to_data(_learnt(_fed(600)), PLAN, 600.0, WALL + 600)
    assert data is not None
    doc = json.loads(data[checkpoint.DATA_KEY])
    doc["kv"] = [float("nan"), 1.0]
    assert checkpoint.from_data({checkpoint.DATA_KEY: json.dumps(doc)}, PLAN, 601.0, WALL + 601) == Forecast()


def test_the_configmap_is_owned_by_the_deployment_and_named_within_dns_limits() -> None:
    cm = checkpoint.configmap("team-a", "chat", "uid-1", {"forecast.json": "{}"})
    assert cm["metadata"]["name"] == "chat-autoscaler"
    owner = {"apiVersion": "qwenfleet.dev/v1alpha1", "kind": "Qwen3Deployment", "name": "chat", "uid": "uid-1"}
    assert cm["metadata"]["ownerReferences"] == [owner]
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == checkpoint.COMPONENT
    assert len(checkpoint.configmap_name("x" * 63)) <= 63


def test_plan_key_changes_with_what_a_replica_holds() -> None:
    plan = {"model": "Qwen3-4B", "gpu": "L4-24GB", "tensorParallelSize": 1, "maxNumSeqs": 64}
    assert checkpoint.plan_key(plan) == checkpoint.plan_key(dict(plan))
    assert checkpoint.plan_key(plan) != checkpoint.plan_key(plan | {"gpu": "H100-80GB"})
    assert checkpoint.plan_key(plan) != checkpoint.plan_key(plan | {"maxNumSeqs": 128})


def test_a_configmap_qwenfleet_did_not_make_is_never_taken_over() -> None:
    ours = checkpoint.configmap("team-a", "chat", "uid-1", {})
    assert checkpoint.is_ours(None)
    assert checkpoint.is_ours(ours)
    assert not checkpoint.is_ours({"metadata": {"name": "chat-autoscaler"}, "data": {"notes": "mine"}})
    relabelled = {"metadata": {"labels": {**ours["metadata"]["labels"], "app.kubernetes.io/managed-by": "helm"}}}
    assert not checkpoint.is_ours(relabelled)
